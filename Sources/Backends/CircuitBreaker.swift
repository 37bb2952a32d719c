import Metrics
import NIOConcurrencyHelpers

/// The breaker's state machine: closed, open until an instant, or half-open with one probe out.
final class CircuitBreaker: Sendable {
    enum Permission {
        case granted(isProbe: Bool)
        case denied
    }

    private struct State {
        var consecutiveFailures = 0
        var openUntil: ContinuousClock.Instant?
        var probeInFlight = false
    }

    private let policy: ResilientBackend.BreakerPolicy
    private let state = NIOLockedValueBox(State())
    /// `llmq_backend_circuit_open`: 1 from the opening failure until a success closes it.
    private let openGauge: Gauge

    init(policy: ResilientBackend.BreakerPolicy, backend: String = "") {
        self.policy = policy
        self.openGauge = Gauge(label: "llmq_backend_circuit_open", dimensions: [("backend", backend)])
        openGauge.record(0)
    }

    func isOpen(at now: ContinuousClock.Instant) -> Bool {
        state.withLockedValue { state in
            guard let openUntil = state.openUntil else { return false }
            return now < openUntil || state.probeInFlight
        }
    }

    /// How long until a probe may be sent; nil when requests may go now.
    func timeUntilProbe(at now: ContinuousClock.Instant) -> Duration? {
        state.withLockedValue { state in
            guard let openUntil = state.openUntil else { return nil }
            if now < openUntil { return openUntil - now }
            return state.probeInFlight ? .milliseconds(50) : nil
        }
    }

    /// Closed: go. Open: denied. Open period over: the first caller probes, others are denied
    /// until the probe has answered.
    func permission(at now: ContinuousClock.Instant = .now) -> Permission {
        state.withLockedValue { state in
            guard let openUntil = state.openUntil else { return .granted(isProbe: false) }
            if now < openUntil || state.probeInFlight { return .denied }
            state.probeInFlight = true
            return .granted(isProbe: true)
        }
    }

    /// Opens the circuit now (a backend found down at start); a probe follows after the open period.
    func open() {
        state.withLockedValue { state in
            state.openUntil = ContinuousClock.now + policy.openDuration
            state.probeInFlight = false
        }
        openGauge.record(1)
    }

    /// Gives up the probe without a verdict (its request was cancelled); the circuit stays
    /// open, and the next caller after the open period probes.
    func releaseProbe() {
        state.withLockedValue { state in
            state.probeInFlight = false
        }
    }

    func recordSuccess() {
        let wasOpen = state.withLockedValue { state in
            defer { state = State() }
            return state.openUntil != nil
        }
        if wasOpen { openGauge.record(0) }
    }

    /// Returns true when this failure opened the circuit.
    func recordFailure(wasProbe: Bool) -> Bool {
        let opened = state.withLockedValue { state in
            state.consecutiveFailures += 1
            if wasProbe || (state.openUntil == nil && state.consecutiveFailures >= policy.failureThreshold) {
                state.openUntil = ContinuousClock.now + policy.openDuration
                state.probeInFlight = false
                return true
            }
            return false
        }
        if opened { openGauge.record(1) }
        return opened
    }
}
