import NIOConcurrencyHelpers

/// A signal with a generation count: a waiter notes the generation, checks its condition, and
/// waits for the next signal only if none came meanwhile, so no wake-up is lost between the
/// check and the wait (as with a condition variable's predicate loop).
public final class SlotChanges: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// The current generation, to pass to ``wait(after:until:)``.
    public var generation: UInt64 { state.withLockedValue { $0.generation } }

    /// Wakes every waiter.
    public func signal() {
        let waiters = state.withLockedValue { state in
            state.generation &+= 1
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once a signal came after `generation`, at `deadline`, or when cancelled.
    public func wait(after generation: UInt64, until deadline: ContinuousClock.Instant? = nil) async {
        guard let deadline else { return await waitForSignal(after: generation) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal(after: generation) }
            group.addTask { try? await Task.sleep(until: deadline, clock: .continuous) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForSignal(after generation: UInt64) async {
        let id = state.withLockedValue { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { state -> Bool in
                    if state.generation != generation || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
