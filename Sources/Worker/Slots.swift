import NIOConcurrencyHelpers

/// Counts requests in flight against the worker's concurrency. The reader waits here for a free
/// slot before it asks Redis for more entries, so a worker never holds more than it can run.
final class Slots: Sendable {
    private struct State {
        var inUse = 0
        var waiter: CheckedContinuation<Void, Never>?
    }

    let capacity: Int
    private let state = NIOLockedValueBox(State())

    init(capacity: Int) {
        self.capacity = capacity
    }

    var inUse: Int { state.withLockedValue { $0.inUse } }

    /// Waits until at least one slot is free and returns how many are. Returns early (possibly
    /// with 0) when cancelled or woken by ``wakeReader()``.
    func waitForFree() async -> Int {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLockedValue { state -> Bool in
                    if state.inUse < capacity || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
            return state.withLockedValue { capacity - $0.inUse }
        } onCancel: {
            wakeReader()
        }
    }

    func take() {
        state.withLockedValue { $0.inUse += 1 }
    }

    func release() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.inUse -= 1
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Lets a waiting reader return, e.g. to notice a shutdown.
    func wakeReader() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Waits until no request is in flight or `timeout` has passed; true if none is.
    func waitUntilIdle(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while inUse > 0 {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }
}
