#!/usr/bin/env bash
# bench/cpu-stream.sh LLMQ_BINARY: 2,000 streamed requests (32 tokens at 1 ms), concurrency 64, one
# worker; prints the rate, chunks per request, and the worker's and Redis's CPU seconds.
set -euo pipefail
BIN=$1
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RP=$(free_port); SP=$(free_port)
redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
rpid=$!
until redis-cli -p $RP ping >/dev/null 2>&1; do sleep 0.05; done
$BIN sim --port $SP --slots 1024 --token-ms 1 --max-queue 100000 2>/dev/null & spid=$!
until curl -sf http://127.0.0.1:$SP/health >/dev/null; do sleep 0.05; done
$BIN worker --redis-url redis://127.0.0.1:$RP --endpoint http://127.0.0.1:$SP --consumer w --concurrency 64 --log-level warning & wpid=$!
sleep 0.3
r0=$(redis-cli -p $RP INFO cpu | tr -d '\r' | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{print s}')
w0=$(awk '{print ($14+$15)/100}' /proc/$wpid/stat)
rate=$($BIN bench --redis-url redis://127.0.0.1:$RP --stream --requests 2000 --concurrency 64 --max-tokens 32 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["answered"]/d["seconds"]), d["chunksPerRequest"])')
w1=$(awk '{print ($14+$15)/100}' /proc/$wpid/stat)
r1=$(redis-cli -p $RP INFO cpu | tr -d '\r' | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{print s}')
echo "$(basename $BIN) streamed rate,chunks/request=$rate worker_cpu=$(python3 -c "print(round($w1-$w0,2))") redis_cpu=$(python3 -c "print(round($r1-$r0,2))")"
kill $wpid $spid; wait $wpid 2>/dev/null || true; kill $rpid; wait $rpid 2>/dev/null || true
