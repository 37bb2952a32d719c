#!/usr/bin/env bash
# bench/cpu-drain.sh LLMQ_BINARY: 20,000 pre-filled requests drained by one worker (concurrency 64,
# sim with zero model time); prints the drain rate, the worker's and Redis's CPU seconds and
# Redis's per-command stats. Alternate two binaries to compare them (docs/BENCHMARKS.md).
set -euo pipefail
BIN=$1
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RP=$(free_port); SP=$(free_port)
redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
rpid=$!
until redis-cli -p $RP ping >/dev/null 2>&1; do sleep 0.05; done
$BIN sim --port $SP --slots 1024 --token-ms 0 --max-queue 100000 2>/dev/null & spid=$!
until curl -sf http://127.0.0.1:$SP/health >/dev/null; do sleep 0.05; done
run=$($BIN bench --redis-url redis://127.0.0.1:$RP --requests 20000 --prefill-only)
r0=$(redis-cli -p $RP INFO cpu | tr -d '\r' | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{print s}')
$BIN worker --redis-url redis://127.0.0.1:$RP --endpoint http://127.0.0.1:$SP --consumer w --concurrency 64 --log-level warning & wpid=$!
rate=$($BIN bench --redis-url redis://127.0.0.1:$RP --requests 20000 --collect-only --run "$run" --json 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["throughputPerSecond"]))')
wcpu=$(awk '{print ($14+$15)/100}' /proc/$wpid/stat)
r1=$(redis-cli -p $RP INFO cpu | tr -d '\r' | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{print s}')
stats=$(redis-cli -p $RP INFO commandstats | tr -d '\r' | grep -E "cmdstat_(evalsha|xreadgroup|xack|xadd|set):" | sed 's/cmdstat_//; s/,rejected.*//' | tr '\n' ' ')
echo "$(basename $BIN) rate=$rate worker_cpu=$wcpu redis_cpu=$(python3 -c "print(round($r1-$r0,2))") $stats"
kill $wpid $spid; wait $wpid 2>/dev/null || true; kill $rpid; wait $rpid 2>/dev/null || true
