import LLMQBackends
import LLMQConfiguration
import NIOConcurrencyHelpers

/// What `/healthz` and `/readyz` answer, from state the worker keeps as it goes, so that a probe
/// costs no Redis or backend call.
///
/// Liveness: the read loop is never in one wait longer than that wait can legitimately take. A
/// Redis call returns within the read block plus the command timeout; a wait for a free slot
/// ends when a request finishes, which the backend timeouts bound; a wait for an open circuit
/// ends after the open period and a probe, or, while replies wait for Redis to return, lasts as
/// long as Redis is away. Redis or the backend being down is not a liveness failure (a restart
/// would not help; readiness says it).
final class WorkerHealth: Sendable {
    enum Phase: Sendable {
        /// Reading, claiming, or between steps.
        case working
        /// All `concurrency` requests are running; waiting for one to finish.
        case waitingForSlot
        /// The primary's circuit is open and there is no fallback.
        case waitingForBackend
    }

    private struct State {
        var phase = Phase.working
        var since = ContinuousClock.now
        var redisError: String? = "not connected yet"
        var groupReady = false
        var stopping = false
    }

    private let state = NIOLockedValueBox(State())
    /// The longest each phase may last before the worker counts as stuck.
    private let workingBound: Duration
    private let waitingBound: Duration

    init(configuration: WorkerConfiguration) {
        workingBound = configuration.readBlock + configuration.redis.commandTimeout + .seconds(30)
        // A request's longest legitimate run: every try on the primary and the fallback, each up
        // to its timeout, plus the backoffs between them.
        func longest(_ backend: BackendConfiguration?) -> Duration {
            guard let backend else { return .zero }
            return (backend.requestTimeout + configuration.retry.maxBackoff) * configuration.retry.maxAttempts
        }
        let request = longest(configuration.backend) + longest(configuration.fallback)
        waitingBound = max(request, configuration.breaker.openDuration) + .seconds(60)
    }

    func enter(_ phase: Phase) {
        state.withLockedValue { state in
            state.phase = phase
            state.since = .now
        }
    }

    func redisSucceeded(groupReady: Bool) {
        state.withLockedValue { state in
            state.redisError = nil
            state.groupReady = groupReady
        }
    }

    func redisFailed(_ error: String) {
        state.withLockedValue { $0.redisError = error }
    }

    func markStopping() {
        state.withLockedValue { $0.stopping = true }
    }

    /// `/healthz`.
    func liveness(at now: ContinuousClock.Instant = .now) -> (isHealthy: Bool, detail: String) {
        state.withLockedValue { state in
            let elapsed = now - state.since
            let bound = state.phase == .working ? workingBound : waitingBound
            // Slots held by replies that wait for Redis to return: readiness says so; a restart
            // would only abandon those replies.
            if state.phase == .waitingForSlot, let error = state.redisError {
                return (true, "alive; waiting for Redis: \(error)")
            }
            if elapsed > bound {
                return (false, "stuck: \(state.phase) for \(elapsed.components.seconds) s (bound \(bound.components.seconds) s)")
            }
            return (true, "alive")
        }
    }

    /// `/readyz`.
    /// - Parameter circuitOpenWithoutFallback: The backend cannot take requests now.
    func readiness(circuitOpenWithoutFallback: Bool) -> (isReady: Bool, detail: String) {
        state.withLockedValue { state in
            if state.stopping { return (false, "stopping") }
            if let error = state.redisError { return (false, "Redis unreachable: \(error)") }
            if !state.groupReady { return (false, "consumer group not ready") }
            if circuitOpenWithoutFallback { return (false, "backend circuit open and no fallback configured") }
            return (true, "ready")
        }
    }
}
