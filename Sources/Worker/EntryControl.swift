import NIOConcurrencyHelpers

/// Why a request's work was cancelled.
enum CancelReason: Sendable {
    /// Graceful shutdown past its grace period: the entry stays pending for another consumer.
    case shutdown
    /// Another consumer claimed the entry (this one stalled or lost Redis for too long): that
    /// one answers it; this one must stop writing at once.
    case leaseLost
}

/// The handle on one request's work, so that the refresh loop or a fenced chunk write can stop
/// it: cancelling runs the registered actions (cancel the task, fence the chunk stream) once.
final class EntryControl: Sendable {
    private struct State {
        var reason: CancelReason?
        var actions: [@Sendable () -> Void] = []
        var finished = false
    }

    private let state = NIOLockedValueBox(State())

    /// How many exist: a request's control must not outlive its work (tests check it, since a
    /// cycle through the actions once kept every streamed request's task and chunk stream).
    static let live = NIOLockedValueBox(0)

    init() {
        Self.live.withLockedValue { $0 += 1 }
    }

    deinit {
        Self.live.withLockedValue { $0 -= 1 }
    }

    /// Why it was cancelled, if it was.
    var reason: CancelReason? { state.withLockedValue { $0.reason } }

    /// Runs `action` when cancelled (at once if it already was).
    func onCancel(_ action: @escaping @Sendable () -> Void) {
        let now = state.withLockedValue { state -> Bool in
            if state.finished { return false }
            if state.reason != nil { return true }
            state.actions.append(action)
            return false
        }
        if now { action() }
    }

    /// The work is over: drops the actions (they hold the task and the chunk stream, and those
    /// hold this control: a cycle that would keep all of them alive); later calls do nothing.
    func finish() {
        let actions = state.withLockedValue { state -> [@Sendable () -> Void] in
            state.finished = true
            defer { state.actions.removeAll() }
            return state.actions
        }
        _ = actions  // released here, outside the lock
    }

    func cancel(_ reason: CancelReason) {
        let actions = state.withLockedValue { state -> [@Sendable () -> Void] in
            guard state.reason == nil, !state.finished else { return [] }
            state.reason = reason
            defer { state.actions.removeAll() }
            return state.actions
        }
        for action in actions { action() }
    }
}

/// An entry in flight: its request stream and ID (several queues may hold the same ID).
struct EntryKey: Hashable, Sendable {
    var stream: String
    var id: String
}
