#!/usr/bin/env bash
# Builds the reproducer of docs/MISCOMPILE.md in release (with and without --static-swift-stdlib),
# runs it under MALLOC_PERTURB_=165 and prints one line:
#   miscompile: reproduced (toolchain <first line of swift --version>)
#   miscompile: not reproduced (toolchain ...)
# Exit status 0 in both cases; non-zero only when the package cannot be built.
# Details (each program's output, the trap of --lock) go to stderr with VERBOSE=1.
# Environment: SWIFT (default swift), SCRATCH (default /tmp/llmq-miscompile-check).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SWIFT="${SWIFT:-swift}"
SCRATCH="${SCRATCH:-/tmp/llmq-miscompile-check}"
toolchain="$("$SWIFT" --version 2>/dev/null | head -n 1)"
log() { if [ "${VERBOSE:-0}" = 1 ]; then echo "$@" >&2; fi; }

reproduced=0
for variant in release release-static; do
    flags=(-c release)
    [ "$variant" = release-static ] && flags+=(--static-swift-stdlib)
    scratch="$SCRATCH/$variant"
    if ! nice -n 15 "$SWIFT" build "${flags[@]}" --package-path "$here" --scratch-path "$scratch" >"$SCRATCH-$variant.log" 2>&1; then
        echo "miscompile: cannot build the reproducer ($variant, toolchain $toolchain); see $SCRATCH-$variant.log" >&2
        exit 2
    fi
    bin="$scratch/release"
    for program in MiscompileRepro NoLock FixedLayoutControl; do
        output="$(MALLOC_PERTURB_=165 "$bin/$program" 2>&1)"
        log "[$variant] $program: $(echo "$output" | tr '\n' ' ')"
        if [ "$program" = MiscompileRepro ] && echo "$output" | grep -q '^RESULT: miscompiled'; then
            reproduced=1
        fi
    done
    # What llmq saw: locking the Mutex traps (a non-zero futex word that is not the thread's id).
    if [ "${VERBOSE:-0}" = 1 ]; then
        output="$(MALLOC_PERTURB_=165 "$bin/MiscompileRepro" --lock 2>&1)"
        log "[$variant] MiscompileRepro --lock (exit $?): $(echo "$output" | grep -m1 -E 'Fatal error|locked and unlocked')"
    fi
done

if [ "$reproduced" = 1 ]; then
    echo "miscompile: reproduced (toolchain $toolchain)"
else
    echo "miscompile: not reproduced (toolchain $toolchain)"
fi
exit 0
