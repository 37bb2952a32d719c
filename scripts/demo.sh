#!/usr/bin/env bash
# The llmq demo: a local redis-server, a backend (llmq sim, or a real llama-server with
# BACKEND=llama-cpp), two workers, requests published with redis-cli, the replies, llmq status.
# Everything it starts listens on 127.0.0.1 and is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${BACKEND:-sim}"
LLMQ="${LLMQ:-.build/release/llmq}"  # make demo builds it
case "$BACKEND" in
    sim | llama-cpp) ;;
    *) echo "demo.sh: BACKEND must be sim or llama-cpp" >&2; exit 2 ;;
esac

# True when something accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback port nothing listens on, as the kernel picks one (python3 comes with deps.sh's python3-venv).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# REDIS_PORT and BACKEND_PORT may be given; a port that is taken is refused, since the demo
# starts, and afterwards stops, servers of its own and must never use or stop another one.
for name in REDIS_PORT BACKEND_PORT; do
    if [ -n "${!name:-}" ]; then
        if port_in_use "${!name}"; then
            echo "demo.sh: something already listens on 127.0.0.1:${!name} ($name); choose a free port or leave $name unset" >&2
            exit 1
        fi
    else
        port=$(free_port)
        while [ "$port" = "${REDIS_PORT:-}" ] || [ "$port" = "${BACKEND_PORT:-}" ]; do port=$(free_port); done
        printf -v "$name" '%s' "$port"
    fi
done
[ "$REDIS_PORT" != "$BACKEND_PORT" ] || { echo "demo.sh: REDIS_PORT and BACKEND_PORT are both $REDIS_PORT" >&2; exit 1; }
work=$(mktemp -d)
pids=()       # the workers and llmq sim, stopped first
redis_pid=""  # the redis-server this script started, stopped last

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # llama-server.sh stops only the server its own pid file for this port names.
    if [ "$BACKEND" = llama-cpp ]; then scripts/llama-server.sh stop --port "$BACKEND_PORT" 2>/dev/null || true; fi
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cli() { redis-cli -p "$REDIS_PORT" "$@"; }

step "starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work" --save "" --appendonly no --daemonize no \
    >"$work/redis.log" 2>&1 &
redis_pid=$!
# Ready when the server answering on the port is the one started here.
until [ "$(cli INFO server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$redis_pid" ]; do
    if ! kill -0 "$redis_pid" 2>/dev/null; then
        redis_pid=""
        echo "demo.sh: redis-server did not start on 127.0.0.1:$REDIS_PORT:" >&2
        tail -n 5 "$work/redis.log" >&2
        exit 1
    fi
    sleep 0.1
done

case "$BACKEND" in
    sim)
        step "starting llmq sim on 127.0.0.1:$BACKEND_PORT (4 slots, 20 ms per token)"
        "$LLMQ" sim --port "$BACKEND_PORT" --slots 4 --token-ms 20 2>"$work/sim.log" &
        pids+=($!)
        ;;
    llama-cpp)
        step "starting a real llama-server on 127.0.0.1:$BACKEND_PORT (4 slots, random-weight model)"
        scripts/llama-server.sh start --port "$BACKEND_PORT" --parallel 4
        ;;
esac
until curl -sf "http://127.0.0.1:$BACKEND_PORT/health" >/dev/null; do
    if [ "$BACKEND" = sim ] && ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "demo.sh: llmq sim did not start on 127.0.0.1:$BACKEND_PORT:" >&2
        tail -n 5 "$work/sim.log" >&2
        exit 1
    fi
    sleep 0.1
done

step "starting two workers (concurrency 2 each) in one consumer group"
for name in worker-a worker-b; do
    LLMQ_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" LLMQ_BACKEND_TYPE=llama-cpp \
    LLMQ_BACKEND_ENDPOINT="http://127.0.0.1:$BACKEND_PORT" \
        "$LLMQ" worker --consumer "$name" --concurrency 2 2>"$work/$name.log" &
    pids+=($!)
done

step "publishing requests with redis-cli"
show() {  # prints the command as one would type it, then runs it
    local line="\$ redis-cli -p $REDIS_PORT" arg
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_:.-]+$ ]]; then line+=" $arg"; else line+=" '$arg'"; fi
    done
    echo "$line"
    cli "$@"
}
show XADD llmq:requests '*' prompt "Write a haiku about queues" max_tokens 24 id haiku
show XADD llmq:requests '*' prompt hi max_tokens 8
show XADD llmq:requests '*' messages '[{"role":"system","content":"Be brief."},{"role":"user","content":"Name a color."}]' max_tokens 8 id chat
echo "\$ redis-cli -p $REDIS_PORT XADD llmq:requests '*' prompt \"Request number \$i\" max_tokens 16 id batch-\$i   # for i in 1..5"
for i in 1 2 3 4 5; do cli XADD llmq:requests '*' prompt "Request number $i" max_tokens 16 id "batch-$i" >/dev/null; done
show XADD llmq:requests '*' prompt "bad" max_tokens lots id broken

step "waiting for 9 replies"
deadline=$((SECONDS + 120))
until [ "$(cli XLEN llmq:replies)" -ge 9 ]; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for replies" >&2; exit 1; }
    sleep 0.2
done

step "redis-cli XRANGE llmq:replies - +   (content, status and timings of each)"
cli --no-raw XRANGE llmq:replies - + | sed -n '1,400p'

step "llmq status"
"$LLMQ" status --redis-url "redis://127.0.0.1:$REDIS_PORT"
