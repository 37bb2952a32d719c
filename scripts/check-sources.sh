#!/usr/bin/env bash
# Fails when Sources use Synchronization's Mutex or Atomic. Swift 6.3.1's optimizer can drop the
# store that initialises a Mutex inside an inlined class initializer (docs/MISCOMPILE.md); llmq's
# locks are NIOLockedValueBox, initialised by a call to pthread_mutex_init that cannot be elided.
set -euo pipefail
cd "$(dirname "$0")/.."
if hits=$(grep -rnE '^\s*(public |internal |package )?import Synchronization|\bMutex<|\bMutex\(|\bAtomic<' Sources); then
    echo "check-sources: Synchronization's Mutex/Atomic in Sources; use NIOLockedValueBox (see docs/MISCOMPILE.md):" >&2
    echo "$hits" >&2
    exit 1
fi
echo "check-sources: no Synchronization Mutex/Atomic in Sources"
