#!/usr/bin/env bash
# What Redis Cluster mode costs and how long a failover takes (see docs/BENCHMARKS.md, "Redis Cluster").
#   bench/cluster.sh [drain|wait|failover|all]
# Needs a release build (make release). Starts its own redis-servers (one single, six cluster
# nodes: 3 masters, 3 replicas) and `llmq sim` on 127.0.0.1, and stops them (nothing else).
#   drain     one worker drains N pre-filled requests: single Redis, single with a replica, cluster, in rounds
#   wait      the same on the cluster, redis.waitReplicas 0 vs 1
#   failover  kill -9 of the queue's master mid-drain: time to the first reply from the new
#             master, with cluster-node-timeout 15000 (the default) and 1000
set -euo pipefail
cd "$(dirname "$0")/.."
LLMQ=${LLMQ:-.build/release/llmq}
N=${N:-20000}
PAIRS=${PAIRS:-3}
CONCURRENCY=${CONCURRENCY:-64}
free_port() {  # at most 55535, with port + 10000 free too (a cluster node's bus)
    python3 - <<'EOF'
import random, socket
def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    port = random.randint(20000, 22767)  # below the ephemeral range, bus ports included
    if free(port) and free(port + 10000):
        print(port); break
EOF
}
SIM_PORT=$(free_port)
tmp=$(mktemp -d)
server_pids=()  # every redis-server this script started: the only ones it ever stops
pids=()         # sim and workers

stop_workers() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
stop_servers() {
    for pid in "${server_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    server_pids=()
}
cleanup() { stop_workers; stop_servers; rm -rf "$tmp"; }
trap cleanup EXIT

declare -A node_pid
redis_node() {  # redis_node PORT [OPTIONS...]
    mkdir -p "$tmp/$1"
    redis-server --port "$1" --bind 127.0.0.1 --dir "$tmp/$1" --save "" --appendonly no --loglevel warning "${@:2}" >/dev/null &
    server_pids+=($!)
    node_pid[$1]=$!
    until redis-cli -p "$1" ping >/dev/null 2>&1; do sleep 0.05; done
}

single() {  # a fresh single redis-server; sets REDIS_URL, CLUSTER=false
    stop_servers
    local port; port=$(free_port)
    redis_node "$port"
    REDIS_URL=redis://127.0.0.1:$port CLUSTER=false FIRST=$port
}

replicated() {  # a fresh single redis-server with one replica: replication's own cost, without the cluster
    single
    local port; port=$(free_port)
    redis_node "$port" --replicaof 127.0.0.1 "$FIRST"
    until redis-cli -p "$port" info replication | grep -q master_link_status:up; do sleep 0.05; done
}

cluster() {  # cluster NODE_TIMEOUT_MS: a fresh 3+3 cluster; sets REDIS_URL, CLUSTER=true, PORTS
    stop_servers
    PORTS=()
    for _ in 1 2 3 4 5 6; do
        local port; port=$(free_port)
        redis_node "$port" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$1"
        PORTS+=("$port")
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
    for port in "${PORTS[@]}"; do
        until redis-cli -p "$port" cluster info | grep -q cluster_state:ok \
            && { ! redis-cli -p "$port" info replication | grep -q role:slave \
                 || redis-cli -p "$port" info replication | grep -q master_link_status:up; }; do
            sleep 0.1
        done
    done
    REDIS_URL=redis://127.0.0.1:${PORTS[0]} CLUSTER=true FIRST=${PORTS[0]}
}

sim() {  # sim TOKEN_MS
    "$LLMQ" sim --port "$SIM_PORT" --slots 256 --token-ms "$1" --max-queue 100000 2>/dev/null &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$SIM_PORT/health" >/dev/null; do sleep 0.05; done
}

worker() {  # worker NAME [ENV=VALUE...]
    env LLMQ_REDIS_URL="$REDIS_URL" LLMQ_REDIS_CLUSTER="$CLUSTER" "${@:2}" \
        "$LLMQ" worker --endpoint "http://127.0.0.1:$SIM_PORT" --consumer "$1" \
        --concurrency "$CONCURRENCY" --log-level error &
    pids+=($!)
}

# The same stream names in both modes: {llmq}:requests, {llmq}:replies.
prefill() {  # prefill COUNT MAX_TOKENS: XADD to {llmq}:requests on its master, pipelined
    local port=$FIRST
    if [ "$CLUSTER" = true ]; then port=$(master_port); fi
    python3 - "$1" "$2" <<'EOF' | redis-cli -p "$port" --pipe >/dev/null
import sys
count, tokens = int(sys.argv[1]), sys.argv[2]
def command(*args):
    out = [f"*{len(args)}\r\n"]
    for a in args:
        out.append(f"${len(a.encode())}\r\n{a}\r\n")
    return "".join(out)
sys.stdout.write("".join(command("XADD", "{llmq}:requests", "*", "prompt", "Write a haiku about queues", "max_tokens", tokens) for _ in range(count)))
EOF
}

master_port() {  # the master of the {llmq} slot, from CLUSTER NODES (slot ranges per master)
    local slot; slot=$(redis-cli -p "$FIRST" cluster keyslot '{llmq}' 2>/dev/null || redis-cli -p "${PORTS[1]}" cluster keyslot '{llmq}')
    local nodes=""
    for port in "${PORTS[@]}"; do nodes=$(redis-cli -p "$port" cluster nodes 2>/dev/null) && [ -n "$nodes" ] && break; done
    echo "$nodes" | python3 -c "
import sys
slot = $slot
for line in sys.stdin:
    f = line.split()
    if 'master' not in f[2] or 'fail' in f[2]: continue
    for r in f[8:]:
        if r.startswith('['): continue
        a, _, b = r.partition('-')
        if int(a) <= slot <= int(b or a):
            print(f[1].split('@')[0].split(':')[1])
"
}

rcli() { local port=$FIRST; if [ "$CLUSTER" = true ]; then port=$(master_port); fi; redis-cli -p "$port" "$@"; }

drain_rate() {  # replies between the first and the last reply, by their entry IDs (Redis's clock)
    local first last count
    first=$(rcli XRANGE '{llmq}:replies' - + COUNT 1 | head -n 1)
    last=$(rcli XREVRANGE '{llmq}:replies' + - COUNT 1 | head -n 1)
    count=$(rcli XLEN '{llmq}:replies')
    python3 -c "print(round(($count - 1) * 1000 / max(1, ${last%-*} - ${first%-*})))"
}

wait_drained() {  # until COUNT replies
    until [ "$(rcli XLEN '{llmq}:replies' 2>/dev/null || echo 0)" -ge "$1" ]; do sleep 0.2; done
}

one_drain() {  # one_drain LABEL [ENV...]: a fresh drain of N requests; prints the rate
    rcli DEL '{llmq}:requests' '{llmq}:replies' '{llmq}:stats' >/dev/null
    prefill "$N" 8
    worker "drain-$1" LLMQ_STREAMS_REQUESTS='{llmq}:requests' LLMQ_STREAMS_REPLIES='{llmq}:replies' \
        LLMQ_STREAMS_DEAD='{llmq}:dead' LLMQ_STREAMS_STATS='{llmq}:stats' LLMQ_STREAMS_ANSWERED='{llmq}:answered' \
        LLMQ_STREAMS_REPLY_MAX_LENGTH=0 "${@:2}"
    wait_drained "$N"
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
    drain_rate
}

median() { python3 -c "import statistics,sys; print(round(statistics.median(map(float, sys.argv[1:]))))" "$@"; }

drain() {
    echo "## drain: one worker, concurrency $CONCURRENCY, $N pre-filled requests, sim with zero model time; $PAIRS rounds of single, single with a replica, cluster"
    sim 0
    local singles=() replicas=() clusters=()
    for ((i = 0; i < PAIRS; i++)); do
        single; singles+=("$(one_drain single)")
        replicated; replicas+=("$(one_drain replicated)")
        cluster 15000; clusters+=("$(one_drain cluster)")
        echo "round $((i + 1)): single ${singles[-1]}, single with a replica ${replicas[-1]}, cluster ${clusters[-1]} requests/s"
    done
    local s r c; s=$(median "${singles[@]}"); r=$(median "${replicas[@]}"); c=$(median "${clusters[@]}")
    echo "median: single $s, single with a replica $r, cluster $c requests/s"
    echo "cluster / single = $(python3 -c "print(f'{$c / $s:.3f}')"); with a replica / single = $(python3 -c "print(f'{$r / $s:.3f}')"); cluster / single with a replica = $(python3 -c "print(f'{$c / $r:.3f}')")"
    stop_workers; stop_servers
}

wait_cost() {
    echo "## redis.waitReplicas: one worker on the cluster, 0 vs 1, $N pre-filled requests; $PAIRS alternating pairs"
    sim 0
    cluster 15000
    local off=() on=()
    for ((i = 0; i < PAIRS; i++)); do
        off+=("$(one_drain wait0 LLMQ_REDIS_WAIT_REPLICAS=0)")
        on+=("$(one_drain wait1 LLMQ_REDIS_WAIT_REPLICAS=1)")
        echo "pair $((i + 1)): waitReplicas 0 ${off[-1]} requests/s, waitReplicas 1 ${on[-1]} requests/s"
    done
    local a b; a=$(median "${off[@]}"); b=$(median "${on[@]}")
    echo "median: waitReplicas 0 $a, 1 $b requests/s; 1 / 0 = $(python3 -c "print(f'{$b / $a:.3f}')")"
    stop_workers; stop_servers
}

one_failover() {  # ms from kill -9 of the queue's master to the first reply on the new master
    rcli DEL '{llmq}:replies' >/dev/null
    prefill 100000 4
    worker failover LLMQ_REDIS_NODES="$(printf '127.0.0.1:%s,' "${PORTS[@]:1}" | sed 's/,$//')"
    until [ "$(rcli XLEN '{llmq}:replies')" -ge 2000 ]; do sleep 0.1; done
    local master; master=$(master_port)
    kill -9 "${node_pid[$master]}"
    # Taken once the kill is sent: every reply the dead master wrote has an ID (its clock, the
    # same machine's) up to this millisecond, and the promoted replica's new ones are later.
    local killed; killed=$(date +%s%3N)
    local first="" promoted=""
    for _ in $(seq 1 1200); do
        local now; now=$(master_port 2>/dev/null || true)
        if [ -n "$now" ] && [ "$now" != "$master" ]; then
            [ -n "$promoted" ] || promoted=$(date +%s%3N)
            first=$(redis-cli -p "$now" XRANGE '{llmq}:replies' "$((killed + 1))" + COUNT 1 2>/dev/null | head -n 1)
            [ -n "$first" ] && break
        fi
        sleep 0.1
    done
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
    if [ -z "$first" ]; then
        echo "no reply within 120 s"
    else
        echo "promotion seen after $((promoted - killed)) ms, first reply from the new master after $(( ${first%-*} - killed )) ms"
    fi
}

failover() {
    echo "## failover: kill -9 of the queue's master mid-drain (sim 5 ms a token, 4 tokens), ms to the first reply from the new master"
    sim 5
    for timeout in 15000 1000; do
        for run in 1 2; do
            cluster "$timeout"  # here, not in the $(...) subshell, so that cleanup knows its nodes
            echo "cluster-node-timeout $timeout, run $run: $(one_failover)"
        done
    done
    stop_workers; stop_servers
}

case "${1:-all}" in
    drain) drain ;;
    wait) wait_cost ;;
    failover) failover ;;
    all) drain; wait_cost; failover ;;
    *) echo "usage: bench/cluster.sh [drain|wait|failover|all]" >&2; exit 2 ;;
esac
