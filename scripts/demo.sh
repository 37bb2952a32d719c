#!/usr/bin/env bash
# The llmq demo: a local redis-server, a backend (llmq sim, or a real llama-server with
# BACKEND=llama-cpp), two workers, requests published with redis-cli, the replies, llmq status.
# Everything it starts listens on 127.0.0.1 and is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${BACKEND:-sim}"
REDIS_PORT="${REDIS_PORT:-6390}"
BACKEND_PORT="${BACKEND_PORT:-8090}"
LLMQ=.build/release/llmq
work=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ "$BACKEND" = llama-cpp ] && scripts/llama-server.sh stop --port "$BACKEND_PORT" 2>/dev/null || true
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work" --save "" --appendonly no --daemonize yes >/dev/null
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

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
    *) echo "BACKEND must be sim or llama-cpp" >&2; exit 2 ;;
esac
until curl -sf "http://127.0.0.1:$BACKEND_PORT/health" >/dev/null; do sleep 0.1; done

step "starting two workers (concurrency 2 each) in one consumer group"
for name in worker-a worker-b; do
    LLMQ_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" LLMQ_BACKEND_TYPE=llama-cpp \
    LLMQ_BACKEND_ENDPOINT="http://127.0.0.1:$BACKEND_PORT" \
        "$LLMQ" worker --consumer "$name" --concurrency 2 2>"$work/$name.log" &
    pids+=($!)
done

step "publishing requests with redis-cli"
cli() { redis-cli -p "$REDIS_PORT" "$@"; }
show() {  # prints the command as one would type it, then runs it
    local line='$ redis-cli' arg
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_:.-]+$ ]]; then line+=" $arg"; else line+=" '$arg'"; fi
    done
    echo "$line"
    cli "$@"
}
show XADD llmq:requests '*' prompt "Write a haiku about queues" max_tokens 24 id haiku
show XADD llmq:requests '*' prompt hi max_tokens 8
show XADD llmq:requests '*' messages '[{"role":"system","content":"Be brief."},{"role":"user","content":"Name a color."}]' max_tokens 8 id chat
echo "\$ redis-cli XADD llmq:requests '*' prompt \"Request number \$i\" max_tokens 16 id batch-\$i   # for i in 1..5"
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
