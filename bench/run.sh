#!/usr/bin/env bash
# llmq's benchmarks, each a ratio measured side by side in one run (see docs/BENCHMARKS.md).
#   bench/run.sh [latency|drain|slots|llama|memory|redis-memory|metrics|backends|priority|pool-cost|users|users-cost|affinity|failover|llama-pool|stream|all]
#   bench/run.sh compare OLD_LLMQ NEW_LLMQ   (drain rate and streamed drain, the two binaries alternated;
#                                              CLIENT_LLMQ=, SIM_LLMQ= fix the bench client and simulator)
# Needs a release build (make release); `drain` also the Python baseline's packages
# (pip install -r bench/python-consumer/requirements.txt), `llama` a llama-server
# (scripts/llama-server.sh build). Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
LLMQ=${LLMQ:-.build/release/llmq}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=${REDIS_PORT:-$(free_port)}
SIM_PORT=${SIM_PORT:-$(free_port)}
REDIS=redis://127.0.0.1:$REDIS_PORT
pids=()
redis_pid=""  # the redis-server this script started: the only one it ever stops

stop_redis() {
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
    redis_pid=""
}

cleanup() {
    stop_all
    stop_redis
}
trap cleanup EXIT

fresh_redis() {
    stop_redis
    if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
        echo "bench/run.sh: something else listens on 127.0.0.1:$REDIS_PORT; set REDIS_PORT to a free port" >&2
        exit 1
    fi
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
    redis_pid=$!
    until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
}

sim() {  # sim SLOTS TOKEN_MS
    "${SIM_LLMQ:-$LLMQ}" sim --port "$SIM_PORT" --slots "$1" --token-ms "$2" --max-queue 100000 2>/dev/null &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$SIM_PORT/health" >/dev/null; do sleep 0.05; done
}

stop_all() {
    # Workers (started last) first, so they do not see the simulator go away.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

worker() {  # worker NAME CONCURRENCY [FLAGS...]
    "$LLMQ" worker --redis-url "$REDIS" --endpoint "http://127.0.0.1:$SIM_PORT" --consumer "$1" \
        --concurrency "$2" --log-level warning "${@:3}" &
    pids+=($!)
}

json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

latency() {
    echo "## added latency at 1,000 requests/s (sim with zero model time, 1 worker, concurrency 64)"
    fresh_redis; sim 256 0; worker lat 64; sleep 0.5
    "$LLMQ" bench --redis-url "$REDIS" --requests 2000 --rate 1000 >/dev/null 2>&1  # warm up
    "$LLMQ" bench --redis-url "$REDIS" --requests 20000 --rate 1000 2>/dev/null
    stop_all
}

drain() {
    local n=${DRAIN_REQUESTS:-30000} c=${DRAIN_CONCURRENCY:-64}
    echo "## drain rate: $n pre-filled requests, one consumer, concurrency $c, sim with zero model time"
    fresh_redis; sim 1024 0
    local run; run=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --prefill-only)
    worker drain "$c"
    local llmq_rate; llmq_rate=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --collect-only --run "$run" --json 2>/dev/null | json_field 'round(d["throughputPerSecond"])')
    echo "llmq worker:     $llmq_rate requests/s"
    stop_all
    if [ -f bench/python-consumer/consumer.py ] && python3 -c "import redis, aiohttp" 2>/dev/null; then
        fresh_redis; sim 1024 0
        run=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --prefill-only)
        python3 bench/python-consumer/consumer.py --redis-url "$REDIS" --endpoint "http://127.0.0.1:$SIM_PORT" \
            --concurrency "$c" --consumer py --exit-when-idle 3 &
        pids+=($!)
        local python_rate; python_rate=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --collect-only --run "$run" --json 2>/dev/null | json_field 'round(d["throughputPerSecond"])')
        echo "python consumer: $python_rate requests/s"
        python3 -c "print(f'ratio: {$llmq_rate / $python_rate:.2f}x')"
        stop_all
    else
        echo "(python baseline skipped: pip install -r bench/python-consumer/requirements.txt)"
    fi
}

slots() {
    local token_ms=10 tokens=20  # L = 200 ms per completion
    echo "## slot efficiency: sim --slots S, completion time L = 200 ms, workers x concurrency = S"
    for spec in "4 1 4" "24 2 12" "128 4 32"; do
        set -- $spec
        local s=$1 workers=$2 concurrency=$3
        fresh_redis; sim "$s" "$token_ms"
        for i in $(seq "$workers"); do worker "slot$i" "$concurrency"; done
        sleep 0.5
        local n=$((s * 25))
        local rate; rate=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --max-tokens "$tokens" --json 2>/dev/null | json_field 'd["endToEndPerSecond"]')
        python3 -c "ideal = $s / 0.2; print(f'S={$s:>3} ({$workers} x {$concurrency}): {$rate:8.1f} requests/s, ideal S/L {ideal:6.1f}, efficiency {$rate / ideal:.3f}')"
        stop_all
    done
}

llama() {
    local bin model n=16 port=18790
    bin=$(scripts/llama-server.sh build); model=$(scripts/llama-server.sh model)
    echo "## real llama-server -np 4: llmq pool (1 worker x 4) vs 4 direct HTTP clients, $n x 128 tokens, best of 3"
    "$bin" -m "$model" --host 127.0.0.1 --port "$port" -np 4 -kvu -c 4096 -t 2 --no-webui >/dev/null 2>&1 &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
    local best_direct=0 best_llmq=0
    for round in 1 2 3; do
        local direct; direct=$(python3 scripts/direct-bench.py "http://127.0.0.1:$port" --requests "$n" --concurrency 4 --max-tokens 128 --tag "d$round " --no-ignore-eos | json_field 'd["throughput_rps"]')
        fresh_redis
        "$LLMQ" worker --redis-url "$REDIS" --endpoint "http://127.0.0.1:$port" --consumer llama --concurrency 4 --log-level warning &
        local w=$!
        local pooled; pooled=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --max-tokens 128 --prompt "l$round tell a long story" --json 2>/dev/null | json_field 'd["endToEndPerSecond"]')
        kill "$w"; wait "$w" 2>/dev/null || true
        echo "round $round: direct $direct requests/s, llmq $pooled requests/s"
        best_direct=$(python3 -c "print(max($best_direct, $direct))"); best_llmq=$(python3 -c "print(max($best_llmq, $pooled))")
    done
    python3 -c "print(f'best: direct {$best_direct:.3f}, llmq {$best_llmq:.3f} requests/s, ratio {$best_llmq / $best_direct:.3f}')"
    stop_all
}

memory() {
    echo "## worker memory (RSS): idle, and with 256 requests in flight"
    fresh_redis; sim 256 100
    worker mem 256
    local w=${pids[-1]}
    sleep 2
    echo "idle:            $(awk '/VmRSS/ {print $2, $3}' /proc/$w/status)"
    "$LLMQ" bench --redis-url "$REDIS" --requests 256 --max-tokens 100 --prefill-only >/dev/null
    sleep 3
    echo "256 in flight:   $(awk '/VmRSS/ {print $2, $3}' /proc/$w/status) (sim: $(curl -s http://127.0.0.1:$SIM_PORT/sim/stats))"
    stop_all
}

used_memory() { redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
mib() { python3 -c "print(f'{$1 / 1048576:.1f} MiB')"; }

redis_memory() {
    local n=${REDIS_MEMORY_REQUESTS:-100000}
    local prompt; prompt=$(python3 -c "print(('queue ' * 410)[:2048])")
    echo "## Redis memory: $n requests with 2 KiB prompts through 2 workers x 64 (sim, zero model time)"
    fresh_redis; sim 1024 0
    local empty; empty=$(used_memory)
    local run; run=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --prompt "$prompt" --prefill-only)
    local filled; filled=$(used_memory)
    echo "empty:                 $(mib "$empty")"
    echo "$n requests queued: $(mib "$filled") (what Redis kept forever before: every request, answered or not)"
    worker mem1 64; worker mem2 64
    "$LLMQ" bench --redis-url "$REDIS" --requests "$n" --collect-only --run "$run" --json 2>/dev/null \
        | json_field '"drained at %d requests/s" % round(d["throughputPerSecond"])'
    stop_all
    local drained; drained=$(used_memory)
    local replies; replies=$(redis-cli -p "$REDIS_PORT" XLEN "llmq:bench:$run")
    local reply_bytes; reply_bytes=$(redis-cli -p "$REDIS_PORT" MEMORY USAGE "llmq:bench:$run" SAMPLES 0)
    echo "answered:              $(mib "$drained"); XLEN llmq:requests = $(redis-cli -p "$REDIS_PORT" XLEN llmq:requests), pending = $(redis-cli -p "$REDIS_PORT" XPENDING llmq:requests llmq | head -n 1)"
    echo "reply stream:          $replies replies, $(mib "$reply_bytes") (MEMORY USAGE), $((reply_bytes / replies)) bytes per reply"
    echo "answered - empty - replies: $(mib $((drained - empty - reply_bytes)))"
    python3 -c "print(f'queued / answered: {$filled / $drained:.1f}x')"
}

metrics_cost() {
    local n=${DRAIN_REQUESTS:-30000} c=${DRAIN_CONCURRENCY:-64} pairs=${METRICS_PAIRS:-4}
    local every=${METRICS_SCRAPE_SECONDS:-1}
    echo "## /metrics cost: drain rate, metrics off vs on and scraped every $every s ($pairs alternating pairs, $n requests each)"
    local off=() on=() off_cpu=() on_cpu=()
    for pair in $(seq "$pairs"); do
        for mode in off on; do
            fresh_redis; sim 1024 0
            # The producer, the collector and the simulator are the same binary for both builds
            # when CLIENT_LLMQ and SIM_LLMQ are set, so that only the worker differs.
            local client=${CLIENT_LLMQ:-$LLMQ}
            local run; run=$("$client" bench --redis-url "$REDIS" --requests "$n" --prefill-only)
            if [ "$mode" = on ]; then
                local port; port=$(free_port)
                worker drain "$c" --metrics-port "$port"
                until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.05; done
                (while curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; do sleep "$every"; done) &
                pids+=($!)
            else
                worker drain "$c"
            fi
            local w=${pids[-1]}; [ "$mode" = on ] && w=${pids[-2]}
            local rate; rate=$("$client" bench --redis-url "$REDIS" --requests "$n" --collect-only --run "$run" --json 2>/dev/null | json_field 'round(d["throughputPerSecond"])')
            # The worker's CPU time (user + system) for the whole drain: steadier than a rate.
            local cpu; cpu=$(awk -v hz="$(getconf CLK_TCK)" -v n="$n" '{printf "%.1f", ($14 + $15) / hz * 1e6 / n}' "/proc/$w/stat")
            echo "pair $pair, metrics $mode: $rate requests/s, worker CPU $cpu us/request"
            if [ "$mode" = on ]; then on+=("$rate"); on_cpu+=("$cpu"); else off+=("$rate"); off_cpu+=("$cpu"); fi
            stop_all
        done
    done
    python3 -c "
import statistics
off, on = [$(IFS=,; echo "${off[*]}")], [$(IFS=,; echo "${on[*]}")]
print(f'median off {statistics.median(off):.0f}, on {statistics.median(on):.0f} requests/s, ratio on/off {statistics.median(on) / statistics.median(off):.3f}')
print(f'spread within off: {min(off)}..{max(off)}, within on: {min(on)}..{max(on)}')
off_cpu, on_cpu = [$(IFS=,; echo "${off_cpu[*]}")], [$(IFS=,; echo "${on_cpu[*]}")]
print(f'worker CPU per request: median off {statistics.median(off_cpu):.1f} us, on {statistics.median(on_cpu):.1f} us, ratio on/off {statistics.median(on_cpu) / statistics.median(off_cpu):.3f}')"
    echo "## worker RSS, idle, metrics off vs on"
    fresh_redis; sim 16 0
    worker rss-off 4; local w_off=${pids[-1]}
    local port; port=$(free_port)
    worker rss-on 4 --metrics-port "$port"; local w_on=${pids[-1]}
    sleep 2; curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; sleep 1
    echo "metrics off: $(awk '/VmRSS/ {print $2, $3}' /proc/$w_off/status); metrics on, scraped once: $(awk '/VmRSS/ {print $2, $3}' /proc/$w_on/status)"
    stop_all
}

backends_bench() {
    local n=${BACKENDS_REQUESTS:-1500} sim2_port; sim2_port=$(free_port)
    echo "## two sims (A: 8 slots x 20 tokens x 10 ms, B: 4 slots x 20 tokens x 20 ms), 3 workers, $n requests"
    echo "ideal (Little's law): 8 / 0.2 s + 4 / 0.4 s = 50 requests/s"
    for mode in split discover pool; do
        fresh_redis; sim 8 10
        "$LLMQ" sim --port "$sim2_port" --slots 4 --token-ms 20 --max-queue 100000 2>/dev/null &
        pids+=($!)
        until curl -sf "http://127.0.0.1:$sim2_port/health" >/dev/null; do sleep 0.05; done
        local splits=("3 2" "3 1" "2 1")
        for i in 0 1 2; do
            set -- ${splits[$i]}
            local list
            if [ "$mode" = split ]; then
                # A static split: the workers' slots add up to each server's.
                list="[{\"name\":\"A\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$SIM_PORT\",\"slots\":$1},{\"name\":\"B\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$sim2_port\",\"slots\":$2}]"
            else
                # Each worker learns the servers' whole slot counts from /props.
                list="[{\"name\":\"A\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$SIM_PORT\"},{\"name\":\"B\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$sim2_port\"}]"
            fi
            # One configuration for all three (pool: the slots shared through Redis leases).
            LLMQ_SLOTS_POOL=$([ "$mode" = pool ] && echo true || echo false) LLMQ_BACKENDS="$list" \
                "$LLMQ" worker --redis-url "$REDIS" --consumer "pool$i" --concurrency 12 --log-level warning &
            pids+=($!)
        done
        sleep 1
        local report; report=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --max-tokens 20 --json 2>/dev/null)
        local rate; rate=$(echo "$report" | json_field 'd["endToEndPerSecond"]')
        # backend_ms above the generation time is time spent waiting inside a server.
        local waits; waits=$(echo "$report" | python3 -c "
import json, sys
d = json.load(sys.stdin)
print(' '.join('%s: %d replies, backend_ms p50 %.0f p99 %.0f;' % (b['name'], b['replies'], b['backendMilliseconds']['p50'], b['backendMilliseconds']['p99']) for b in d['backends']))")
        local a b
        a=$(curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | json_field 'd["maxInFlight"]')
        b=$(curl -s "http://127.0.0.1:$sim2_port/sim/stats" | json_field 'd["maxInFlight"]')
        python3 -c "print(f'$mode: {$rate:.1f} requests/s, {$rate / 50:.3f} of ideal; most generating at once: A {$a} (8 slots), B {$b} (4 slots)')"
        echo "  $waits"
        stop_all
    done
}

pool_priority() {
    local lo=${PRIORITY_LO:-600} hi=${PRIORITY_HI:-20}
    echo "## priority across a pool: one 8-slot sim (20 tokens x 10 ms = 200 ms), 5 workers x concurrency 4 with one config;"
    echo "## queue lo flooded with $lo requests, then $hi requests on hi (priority 1) at 2/s: hi's publish-to-reply time against 200 ms"
    for mode in false true; do
        fresh_redis; sim 8 10
        for i in 1 2 3 4 5; do
            LLMQ_SHUTDOWN_GRACE_SECONDS=1 LLMQ_SLOTS_POOL=$mode LLMQ_QUEUES=lo,hi LLMQ_QUEUES_HI_PRIORITY=1 worker "prio$i" 4
        done
        sleep 1
        "$LLMQ" bench --redis-url "$REDIS" --queue lo --requests "$lo" --max-tokens 20 --prefill-only >/dev/null 2>&1
        sleep 2
        local report; report=$(LLMQ_QUEUES=lo,hi LLMQ_QUEUES_HI_PRIORITY=1 "$LLMQ" bench --redis-url "$REDIS" --queue hi --requests "$hi" --rate 2 --max-tokens 20 --json 2>/dev/null)
        local stats; stats=$(curl -s "http://127.0.0.1:$SIM_PORT/sim/stats")
        echo "$report" | python3 -c "
import json, sys
d = json.load(sys.stdin); s = json.loads('$stats')
l = d['latencyMilliseconds']
print(f'slots.pool=$mode: hi publish-to-reply p50 {l[\"p50\"]:.0f} ms ({l[\"p50\"] / 200:.2f}x generation), p99 {l[\"p99\"]:.0f} ms; most waiting inside the sim at once: {s[\"maxQueued\"]}')"
        stop_all
    done
}

pool_cost() {
    echo "## what pool-wide slots cost: slots.pool false and true alternated"
    drain_cost LLMQ_SLOTS_POOL
}

users_cost() {
    echo "## what fair intake costs: users.fair false and true alternated (pool slots on in both); the requests name 100 users in turn"
    DRAIN_USERS=100 drain_cost LLMQ_USERS_FAIR
}

drain_cost() {  # drain_cost VARIABLE: the worker's drain with VARIABLE=false, then true
    local n=${DRAIN_REQUESTS:-20000} c=${DRAIN_CONCURRENCY:-64} rounds=${COMPARE_ROUNDS:-3} users=${DRAIN_USERS:-0}
    echo "## drain of $n requests, one worker at concurrency $c, sim with 1024 slots (from /props) and zero model time;"
    echo "## $rounds rounds; Redis commands per request from INFO commandstats"
    printf "%-6s %-6s %-12s %-16s %s\n" round "$1" "drain req/s" "Redis CPU ms/req" "commands per request"
    for ((round = 1; round <= rounds; round++)); do
        for value in false true; do
            fresh_redis; sim 1024 0
            local run
            if [ "$users" -gt 0 ]; then
                run=$("$LLMQ" bench --redis-url "$REDIS" --requests $((n / users)) --prefill-only --user u0)
                for ((u = 1; u < users; u++)); do
                    "$LLMQ" bench --redis-url "$REDIS" --requests $((n / users)) --prefill-only --run "$run" --user "u$u" >/dev/null
                done
            else
                run=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --prefill-only)
            fi
            redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
            local cpu0; cpu0=$(redis-cli -p "$REDIS_PORT" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {print s}')
            env "$1=$value" "$LLMQ" worker --redis-url "$REDIS" --endpoint "http://127.0.0.1:$SIM_PORT" --consumer drain \
                --concurrency "$c" --log-level warning &
            pids+=($!)
            local rate; rate=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --collect-only --run "$run" --json 2>/dev/null | json_field 'round(d["throughputPerSecond"])')
            local cpu1; cpu1=$(redis-cli -p "$REDIS_PORT" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {print s}')
            local commands; commands=$(redis-cli -p "$REDIS_PORT" info commandstats | python3 -c "
import sys
calls = {}
for line in sys.stdin:
    if line.startswith('cmdstat_'):
        name, rest = line.strip().split(':', 1)
        calls[name[8:]] = int(dict(kv.split('=') for kv in rest.split(','))['calls'])
total = sum(calls.values()) / $n
top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
print(f'{total:.2f} (' + ', '.join(f'{k} {v / $n:.2f}' for k, v in top) + ')')")
            printf "%-6s %-6s %-12s %-16s %s\n" "$round" "$value" "$rate" "$(python3 -c "print(f'{($cpu1 - $cpu0) * 1000 / $n:.3f}')")" "$commands"
            stop_all
        done
    done
}

users_fair() {
    local flood=${USERS_FLOOD:-2000} seconds=${USERS_SECONDS:-20}
    echo "## fair to every user: one 8-slot sim (20 tokens x 10 ms = 200 ms, 40 requests/s), 3 workers x concurrency 4 with one config;"
    echo "## user a floods $flood requests, then nine users send one a second each for $seconds s (each starting 0.11 s after the last):"
    echo "## the nine's publish-to-reply time against 200 ms"
    for mode in false true; do
        fresh_redis; sim 8 10
        for i in 1 2 3; do LLMQ_SHUTDOWN_GRACE_SECONDS=1 LLMQ_USERS_FAIR=$mode worker "fair$i" 4; done
        sleep 1
        local run; run=$("$LLMQ" bench --redis-url "$REDIS" --requests "$flood" --max-tokens 20 --user a --prefill-only 2>/dev/null)
        sleep 2
        local before; before=$(redis-cli -p "$REDIS_PORT" xlen "llmq:bench:$run")
        local reports=() bench_pids=()
        for u in 1 2 3 4 5 6 7 8 9; do
            # Nine people, not one clock: each starts at its own moment within the first second.
            sleep 0.11
            reports+=("$(mktemp)")
            "$LLMQ" bench --redis-url "$REDIS" --requests "$seconds" --rate 1 --max-tokens 20 --user "u$u" --timeout 300 --json >"${reports[-1]}" 2>/dev/null &
            bench_pids+=($!)
        done
        sleep "$seconds"
        local after; after=$(redis-cli -p "$REDIS_PORT" xlen "llmq:bench:$run")
        for pid in "${bench_pids[@]}"; do wait "$pid" || true; done
        local stats; stats=$(curl -s "http://127.0.0.1:$SIM_PORT/sim/stats")
        python3 - "$mode" "$(( (after - before) ))" "$seconds" "$stats" "${reports[@]}" <<'PY'
import json, statistics, sys
mode, flood_answered, seconds, stats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
reports = [json.load(open(path)) for path in sys.argv[5:]]
p50 = statistics.median(r["latencyMilliseconds"]["p50"] for r in reports)
p99 = max(r["latencyMilliseconds"]["p99"] for r in reports)
answered = sum(r["replies"] - r["errors"] for r in reports)
print(f"users.fair={mode}: the nine's publish-to-reply p50 {p50:.0f} ms ({p50 / 200:.2f}x generation), worst user's p99 {p99:.0f} ms ({p99 / 200:.2f}x); "
      f"{answered} of {9 * seconds} answered; the flood's rate meanwhile {flood_answered / seconds:.1f}/s; most waiting inside the sim: {stats['maxQueued']}")
PY
        rm -f "${reports[@]}"
        stop_all
    done
}

backends_failover() {
    local sim2_port; sim2_port=$(free_port)
    echo "## a backend lost and back: sims A (8 slots x 200 ms) and B (4 slots x 400 ms), one worker, 45 requests/s for 40 s; A killed (SIGKILL) at 12 s, back at 26 s"
    fresh_redis; sim 8 10
    local sim_a=${pids[-1]}
    "$LLMQ" sim --port "$sim2_port" --slots 4 --token-ms 20 --max-queue 100000 2>/dev/null &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$sim2_port/health" >/dev/null; do sleep 0.05; done
    LLMQ_BACKENDS="[{\"name\":\"A\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$SIM_PORT\"},{\"name\":\"B\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$sim2_port\"}]" \
        LLMQ_BREAKER_OPEN_SECONDS=2 LLMQ_BREAKER_FAILURE_THRESHOLD=2 \
        "$LLMQ" worker --redis-url "$REDIS" --consumer failover --concurrency 16 --log-level error &
    pids+=($!)
    sleep 1
    "$LLMQ" bench --redis-url "$REDIS" --requests 1800 --rate 45 --max-tokens 20 --timeline 2 > /tmp/llmq-failover.txt 2>&1 &
    local bench=$!
    sleep 12; kill -9 "$sim_a"; wait "$sim_a" 2>/dev/null || true
    sleep 14; "$LLMQ" sim --port "$SIM_PORT" --slots 8 --token-ms 10 --max-queue 100000 2>/dev/null &
    pids+=($!)
    wait "$bench" || true
    cat /tmp/llmq-failover.txt
    stop_all
}

affinity_bench() {
    # Two kinds of server: llama-server's defaults (slots plus a host-memory prompt cache,
    # --cache-ram, that keeps every conversation's last state), and servers whose cache is their
    # slots only (-cram 0, as a GPU server whose KV memory holds just its slots), with a slot per
    # conversation.
    echo "## conversation affinity on two real llama-servers; bench/affinity.py: ${AFFINITY_CONVERSATIONS:-16} conversations x ${AFFINITY_TURNS:-6} turns,"
    echo "## the history growing each turn, 3-6 s between a reply and the next turn; 2 workers x 8 with one config; each mode on freshly started servers"
    affinity_round "-np 4 -c 16384" "llama-server defaults: 4 slots and the host-memory prompt cache"
    affinity_round "-np 8 -c 32768 -cram 0" "the slots' cache only: 8 slots, -cram 0"
}

affinity_round() {  # affinity_round SERVER_FLAGS DESCRIPTION
    local bin model conversations=${AFFINITY_CONVERSATIONS:-16} turns=${AFFINITY_TURNS:-6}
    bin=$(scripts/llama-server.sh build); model=$(scripts/llama-server.sh model)
    echo "### $2 ($1 -kvu -t 1)"
    for mode in off opening session; do
        local port_a port_b first=${#pids[@]}
        port_a=$(free_port); port_b=$(free_port)
        for port in "$port_a" "$port_b"; do
            # shellcheck disable=SC2086
            "$bin" -m "$model" --host 127.0.0.1 --port "$port" $1 -kvu -t 1 --no-webui >/dev/null 2>&1 &
            pids+=($!)
        done
        for port in "$port_a" "$port_b"; do until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done; done
        fresh_redis
        local list="[{\"name\":\"llama-a\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$port_a\"},{\"name\":\"llama-b\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$port_b\"}]"
        local enabled=true; [ "$mode" = off ] && enabled=false
        for w in 1 2; do
            LLMQ_BACKENDS="$list" LLMQ_AFFINITY_ENABLED=$enabled LLMQ_SHUTDOWN_GRACE_SECONDS=1 "$LLMQ" worker --redis-url "$REDIS" \
                --consumer "affinity$w" --concurrency 8 --log-level warning &
            pids+=($!)
        done
        sleep 1
        local results; results=$(python3 bench/affinity.py "$REDIS_PORT" "$conversations" "$turns" "$([ "$mode" = session ] && echo session || echo opening)")
        echo "$results" > "/tmp/llmq-affinity-$mode.json"
        echo "$results" | python3 -c "
import json, statistics, sys
rows = [r for r in json.load(sys.stdin) if r['turn'] > 0]
last = [r['prompt_tokens'] for r in rows if r['turn'] == max(x['turn'] for x in rows)]
moved = sum(1 for c in {r['conversation'] for r in rows} if len({r['backend'] for r in rows if r['conversation'] == c}) > 1)
print(f'affinity $mode: turns 2-$turns prompt_ms mean {statistics.mean(r[\"prompt_ms\"] for r in rows):.1f}, '
      f'first_token_ms p50 {statistics.median(r[\"first_token_ms\"] for r in rows):.1f}, '
      f'cached {sum(r[\"cached_tokens\"] for r in rows) / sum(r[\"prompt_tokens\"] for r in rows):.2f} of prompt tokens; '
      f'last turn prompt {statistics.mean(last):.0f} tokens; conversations that changed backend after turn 1: {moved}')"
        for ((i = ${#pids[@]} - 1; i >= first; i--)); do kill "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true; done
        pids=("${pids[@]:0:$first}")
    done
}

llama_pool() {
    local bin model n=16 port_a port_b
    bin=$(scripts/llama-server.sh build); model=$(scripts/llama-server.sh model)
    port_a=$(free_port); port_b=$(free_port)
    echo "## two real llama-servers (-np 2, -t 1 each): llmq pool (1 worker x 4, LLMQ_BACKENDS, slots from /props) vs 2+2 direct HTTP clients, $n x 128 tokens, best of 3"
    for port in "$port_a" "$port_b"; do
        "$bin" -m "$model" --host 127.0.0.1 --port "$port" -np 2 -kvu -c 2048 -t 1 --no-webui >/dev/null 2>&1 &
        pids+=($!)
    done
    for port in "$port_a" "$port_b"; do until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done; done
    local list="[{\"name\":\"llama-a\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$port_a\"},{\"name\":\"llama-b\",\"type\":\"llama-cpp\",\"endpoint\":\"http://127.0.0.1:$port_b\"}]"
    local best_direct=0 best_llmq=0
    for round in 1 2 3; do
        local start end
        start=$(date +%s.%N)
        python3 scripts/direct-bench.py "http://127.0.0.1:$port_a" --requests $((n / 2)) --concurrency 2 --max-tokens 128 --tag "a$round " --no-ignore-eos >/dev/null &
        local da=$!
        python3 scripts/direct-bench.py "http://127.0.0.1:$port_b" --requests $((n / 2)) --concurrency 2 --max-tokens 128 --tag "b$round " --no-ignore-eos >/dev/null &
        local db=$!
        wait "$da" "$db"
        end=$(date +%s.%N)
        local direct; direct=$(python3 -c "print($n / ($end - $start))")
        fresh_redis
        LLMQ_BACKENDS="$list" "$LLMQ" worker --redis-url "$REDIS" --consumer llama-pool --concurrency 4 --log-level warning &
        local w=$!
        local pooled; pooled=$("$LLMQ" bench --redis-url "$REDIS" --requests "$n" --max-tokens 128 --prompt "p$round tell a long story" --json 2>/dev/null | json_field 'd["endToEndPerSecond"]')
        kill "$w"; wait "$w" 2>/dev/null || true
        echo "round $round: direct $direct requests/s, llmq $pooled requests/s"
        best_direct=$(python3 -c "print(max($best_direct, $direct))"); best_llmq=$(python3 -c "print(max($best_llmq, $pooled))")
    done
    python3 -c "print(f'best: direct {$best_direct:.3f}, llmq {$best_llmq:.3f} requests/s, ratio {$best_llmq / $best_direct:.3f}')"
    stop_all
}

stream_ttft() {
    local n=${STREAM_REQUESTS:-2000} c=${STREAM_CONCURRENCY:-100} rounds=${STREAM_ROUNDS:-3}
    echo "## time to first token: $c concurrent streams, sim --prompt-ms 50 --token-ms 20 (50 tokens/s), 32 tokens, $rounds alternating rounds"
    fresh_redis
    "${SIM_LLMQ:-$LLMQ}" sim --port "$SIM_PORT" --slots 256 --prompt-ms 50 --token-ms 20 --max-queue 100000 2>/dev/null &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$SIM_PORT/health" >/dev/null; do sleep 0.05; done
    worker stream 128; sleep 0.5
    local summary='f=d["firstTokenMilliseconds"]; print("%.2f %.2f %.2f" % (f["p50"], f["p90"], f["p99"]))'
    "$LLMQ" bench --redis-url "$REDIS" --stream --requests 300 --concurrency "$c" --max-tokens 32 >/dev/null  # warm up
    printf "%-6s %-28s %-28s %s\n" round "direct p50/p90/p99 ms" "through llmq p50/p90/p99 ms" "difference p50/p90/p99 ms"
    for ((round = 1; round <= rounds; round++)); do
        local direct queued
        direct=$("$LLMQ" bench --stream --direct "http://127.0.0.1:$SIM_PORT" --requests "$n" --concurrency "$c" --max-tokens 32 --json | python3 -c "import json,sys; d=json.load(sys.stdin); $summary")
        queued=$("$LLMQ" bench --redis-url "$REDIS" --stream --requests "$n" --concurrency "$c" --max-tokens 32 --json | tee /tmp/llmq-stream-bench.json | python3 -c "import json,sys; d=json.load(sys.stdin); $summary")
        printf "%-6s %-28s %-28s %s\n" "$round" "$direct" "$queued" "$(python3 -c "import sys; a=[float(x) for x in '$direct'.split()]; b=[float(x) for x in '$queued'.split()]; print(' '.join('%+.2f' % (y - x) for x, y in zip(a, b)))")"
    done
    python3 -c "import json; d=json.load(open('/tmp/llmq-stream-bench.json')); print('last round through llmq, from the replies: queue_ms p50 %.2f p99 %.2f, backend first_token_ms p50 %.2f p99 %.2f' % (d['queueMilliseconds']['p50'], d['queueMilliseconds']['p99'], d['backendFirstTokenMilliseconds']['p50'], d['backendFirstTokenMilliseconds']['p99'])); print('text chunks per request: %.1f' % d['chunksPerRequest']); c=d['redisCommandsPerRequest']; print('Redis commands per request (INFO commandstats, the producer and the scripts included): %.1f: %s' % (sum(c.values()), ', '.join('%s %.2f' % kv for kv in sorted(c.items(), key=lambda kv: -kv[1]))))"
    stop_all
}

# The same drains with two builds of llmq, alternated round by round so the machine's noise
# falls on both: plain requests (the reply script), then streamed ones (the chunk writes).
compare() {
    local old=$1 new=$2 rounds=${COMPARE_ROUNDS:-4} n=${DRAIN_REQUESTS:-20000} c=${DRAIN_CONCURRENCY:-64}
    local sn=${STREAM_REQUESTS:-2000}
    echo "## old ($old) vs new ($new): drain of $n requests (concurrency $c, zero model time) and of $sn streamed requests (32 tokens at 1 ms, concurrency 64), $rounds alternating rounds"
    printf "%-6s %-5s %-12s %s\n" round build "drain req/s" "streamed drain req/s"
    for ((round = 1; round <= rounds; round++)); do
        for build in old new; do
            local bin=$old; [ $build = new ] && bin=$new
            LLMQ=$bin
            fresh_redis; sim 1024 0
            # The producer, the collector and the simulator are the same binary for both builds
            # when CLIENT_LLMQ and SIM_LLMQ are set, so that only the worker differs.
            local client=${CLIENT_LLMQ:-$LLMQ}
            local run; run=$("$client" bench --redis-url "$REDIS" --requests "$n" --prefill-only)
            worker drain "$c"
            local rate; rate=$("$client" bench --redis-url "$REDIS" --requests "$n" --collect-only --run "$run" --json 2>/dev/null | json_field 'round(d["throughputPerSecond"])')
            stop_all
            fresh_redis; sim 1024 1
            worker stream 64; sleep 0.3
            local streamed; streamed=$("$client" bench --redis-url "$REDIS" --stream --requests "$sn" --concurrency 64 --max-tokens 32 --json | json_field 'round(d["answered"] / d["seconds"])')
            stop_all
            printf "%-6s %-5s %-12s %s\n" "$round" "$build" "$rate" "$streamed"
        done
    done
}

case "${1:-all}" in
    compare) compare "$2" "$3" ;;
    latency) latency ;;
    drain) drain ;;
    slots) slots ;;
    llama) llama ;;
    memory) memory ;;
    redis-memory) redis_memory ;;
    metrics) metrics_cost ;;
    backends) backends_bench ;;
    priority) pool_priority ;;
    pool-cost) pool_cost ;;
    users) users_fair ;;
    users-cost) users_cost ;;
    affinity) affinity_bench ;;
    failover) backends_failover ;;
    llama-pool) llama_pool ;;
    stream) stream_ttft ;;
    all) latency; drain; slots; memory; redis_memory; metrics_cost; llama ;;
    *) sed -n '2,7p' "$0"; exit 2 ;;
esac
