#!/usr/bin/env bash
# Fails when a Swift binary has the shape of the Swift 6.3.1 miscompile of docs/MISCOMPILE.md: a
# load of a class's runtime field-offset global placed before the first call to that class's
# metadata accessor (the load then reads 0 and stores into the object go to the wrong place).
#   scripts/check-binary.sh [BINARY]     (default .build/release/llmq)
# docs/miscompile/scan-binary.py is a heuristic: a hit is worth a look, no hit is no proof; the
# demo and the soak run the same binary under MALLOC_PERTURB_ as well.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-.build/release/llmq}"
report="$(python3 docs/miscompile/scan-binary.py "$binary" 2>&1)"
echo "$report" | grep -v '^SUSPECT' || true
if echo "$report" | grep -q '^SUSPECT'; then
    echo "check-binary: $binary has the shape of the miscompile (docs/MISCOMPILE.md):" >&2
    echo "$report" | grep '^SUSPECT' >&2
    exit 1
fi
