import Logging
import Metrics
import Synchronization

/// Retries transient failures with exponential backoff and jitter, and moves to a fallback
/// backend while a circuit breaker holds the primary open.
///
/// The breaker counts consecutive transient failures of the primary. At `failureThreshold` it
/// opens: requests go to the fallback at once, or, with no fallback, wait (``waitUntilAvailable()``)
/// so that the queue holds them instead of turning them into errors. After `openDuration` one
/// request probes the primary; its success closes the circuit, its failure opens it again.
/// Permanent errors (a 4xx such as llama-server's `exceed_context_size_error`) are returned at
/// once, never retried, and do not count against the primary: it answered.
public final class ResilientBackend: Sendable {
    public struct RetryPolicy: Sendable, Hashable {
        public var maxAttempts: Int
        public var initialBackoff: Duration
        public var maxBackoff: Duration

        public init(maxAttempts: Int = 3, initialBackoff: Duration = .milliseconds(200), maxBackoff: Duration = .seconds(5)) {
            self.maxAttempts = maxAttempts
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
        }

        /// Full jitter: a random wait between half and all of the exponential step, so that
        /// workers that failed together do not retry together.
        func backoff(afterAttempt attempt: Int, retryAfter: Duration?) -> Duration {
            let exponent = min(attempt - 1, 20)
            let step = min(maxBackoff, initialBackoff * (1 << exponent))
            let jittered = step * Double.random(in: 0.5...1.0)
            if let retryAfter { return min(maxBackoff, max(jittered, retryAfter)) }
            return jittered
        }
    }

    public struct BreakerPolicy: Sendable, Hashable {
        public var failureThreshold: Int
        public var openDuration: Duration

        public init(failureThreshold: Int = 5, openDuration: Duration = .seconds(10)) {
            self.failureThreshold = failureThreshold
            self.openDuration = openDuration
        }
    }

    /// The result of ``complete(_:deadline:)``: the completion and how many calls it took.
    public struct Outcome: Sendable {
        public var completion: ChatCompletion
        public var attempts: Int
    }

    /// A failure after all tries, with how many calls were made.
    public struct Failure: Error, Sendable {
        public var error: BackendError
        public var attempts: Int
    }

    public let primary: any ChatBackend
    public let fallback: (any ChatBackend)?
    public let retry: RetryPolicy
    private let breaker: CircuitBreaker
    private let logger: Logger
    private let primaryMetrics: BackendMetrics
    private let fallbackMetrics: BackendMetrics?

    public init(primary: any ChatBackend, fallback: (any ChatBackend)?, retry: RetryPolicy, breaker: BreakerPolicy, logger: Logger) {
        self.primary = primary
        self.fallback = fallback
        self.retry = retry
        self.breaker = CircuitBreaker(policy: breaker, backend: primary.name)
        self.logger = logger
        self.primaryMetrics = BackendMetrics(backend: primary.name)
        self.fallbackMetrics = fallback.map { BackendMetrics(backend: $0.name) }
    }

    /// Closes the connections of the primary and the fallback.
    public func shutdown() {
        primary.shutdown()
        fallback?.shutdown()
    }

    /// Whether the primary's circuit is open now (for status and tests).
    public var isPrimaryOpen: Bool { breaker.isOpen(at: .now) }

    /// Returns at once unless the primary's circuit is open and there is no fallback; then waits
    /// until a probe may go out. Workers call it before taking new requests.
    public func waitUntilAvailable() async throws {
        guard fallback == nil else { return }
        while let wait = breaker.timeUntilProbe(at: .now) {
            try await Task.sleep(for: wait)
        }
    }

    /// Completes the request on the primary, retrying transient failures, then on the fallback.
    /// - Parameter deadline: No retry starts after this instant.
    public func complete(_ request: ChatRequest, deadline: ContinuousClock.Instant? = nil) async throws(Failure) -> Outcome {
        var attempts = 0
        var lastError: BackendError?
        var attempt = 0
        primaryLoop: while attempt < retry.maxAttempts {
            switch await breaker.permission() {
            case .denied:
                // Open circuit: go to the fallback, or with none, wait for the probe (the worker
                // has stopped taking new requests meanwhile), unless that passes the deadline.
                if fallback != nil { break primaryLoop }
                guard let wait = breaker.timeUntilProbe(at: .now) else { continue primaryLoop }
                if let deadline, ContinuousClock.now + wait >= deadline { break primaryLoop }
                do {
                    try await Task.sleep(for: wait)
                } catch {
                    break primaryLoop
                }
                continue primaryLoop
            case .granted(let isProbe):
                attempt += 1
                attempts += 1
                if attempt > 1 { primaryMetrics.retry() }
                do {
                    let completion = try await primary.complete(request)
                    primaryMetrics.attempt(.ok)
                    breaker.recordSuccess()
                    return Outcome(completion: completion, attempts: attempts)
                } catch {
                    primaryMetrics.attempt(error.isTransient ? .transientError : .permanentError)
                    if Task.isCancelled {
                        // A cancelled probe proved nothing: let the next request probe.
                        if isProbe { breaker.releaseProbe() }
                        throw Failure(error: error, attempts: attempts)
                    }
                    guard error.isTransient else {
                        breaker.recordSuccess()
                        throw Failure(error: error, attempts: attempts)
                    }
                    lastError = error
                    if breaker.recordFailure(wasProbe: isProbe) {
                        logger.warning("primary backend circuit opened", metadata: [
                            "llmq.backend": "\(primary.name)", "llmq.error": "\(error.message)",
                        ])
                        if fallback != nil { break primaryLoop }
                    }
                }
            }
            if attempt < retry.maxAttempts {
                guard await sleepBeforeRetry(attempt: attempt, error: lastError, deadline: deadline) else { break }
            }
        }
        if let fallback {
            fallbackMetrics?.fallback()
            for attempt in 1...retry.maxAttempts {
                attempts += 1
                if attempt > 1 { fallbackMetrics?.retry() }
                do {
                    let completion = try await fallback.complete(request)
                    fallbackMetrics?.attempt(.ok)
                    return Outcome(completion: completion, attempts: attempts)
                } catch {
                    fallbackMetrics?.attempt(error.isTransient ? .transientError : .permanentError)
                    lastError = error
                    if !error.isTransient || Task.isCancelled { break }
                }
                if attempt < retry.maxAttempts {
                    guard await sleepBeforeRetry(attempt: attempt, error: lastError, deadline: deadline) else { break }
                }
            }
        }
        let error = lastError ?? BackendError(.unavailable, "\(primary.name) is failing (circuit open) and no fallback is configured")
        throw Failure(error: error, attempts: attempts)
    }

    /// Sleeps the backoff; false if that would pass the deadline or the task was cancelled.
    private func sleepBeforeRetry(attempt: Int, error: BackendError?, deadline: ContinuousClock.Instant?) async -> Bool {
        let wait = retry.backoff(afterAttempt: attempt, retryAfter: error?.retryAfter)
        if let deadline, ContinuousClock.now + wait >= deadline { return false }
        do {
            try await Task.sleep(for: wait)
            return true
        } catch {
            return false
        }
    }
}

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
    private let state = Mutex(State())
    /// `llmq_backend_circuit_open`: 1 from the opening failure until a success closes it.
    private let openGauge: Gauge

    init(policy: ResilientBackend.BreakerPolicy, backend: String = "") {
        self.policy = policy
        self.openGauge = Gauge(label: "llmq_backend_circuit_open", dimensions: [("backend", backend)])
        openGauge.record(0)
    }

    func isOpen(at now: ContinuousClock.Instant) -> Bool {
        state.withLock { state in
            guard let openUntil = state.openUntil else { return false }
            return now < openUntil || state.probeInFlight
        }
    }

    /// How long until a probe may be sent; nil when requests may go now.
    func timeUntilProbe(at now: ContinuousClock.Instant) -> Duration? {
        state.withLock { state in
            guard let openUntil = state.openUntil else { return nil }
            if now < openUntil { return openUntil - now }
            return state.probeInFlight ? .milliseconds(50) : nil
        }
    }

    /// Closed: go. Open: denied. Open period over: the first caller probes, others are denied
    /// until the probe has answered.
    func permission() async -> Permission {
        state.withLock { state in
            guard let openUntil = state.openUntil else { return .granted(isProbe: false) }
            if ContinuousClock.now < openUntil || state.probeInFlight { return .denied }
            state.probeInFlight = true
            return .granted(isProbe: true)
        }
    }

    /// Gives up the probe without a verdict (its request was cancelled); the circuit stays
    /// open, and the next caller after the open period probes.
    func releaseProbe() {
        state.withLock { state in
            state.probeInFlight = false
        }
    }

    func recordSuccess() {
        let wasOpen = state.withLock { state in
            defer { state = State() }
            return state.openUntil != nil
        }
        if wasOpen { openGauge.record(0) }
    }

    /// Returns true when this failure opened the circuit.
    func recordFailure(wasProbe: Bool) -> Bool {
        let opened = state.withLock { state in
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

/// The backend metrics (swift-metrics; `llmq worker` exports them to Prometheus), one set of
/// handles per backend, made once (see `LabelledMetrics` in the worker for why).
final class BackendMetrics: Sendable {
    enum Result: String {
        case ok
        case transientError = "transient_error"
        case permanentError = "permanent_error"
    }

    private let attempts: [Result: Counter]
    private let retries: Counter
    private let fallbacks: Counter

    init(backend: String) {
        var attempts: [Result: Counter] = [:]
        for result in [Result.ok, .transientError, .permanentError] {
            attempts[result] = Counter(label: "llmq_backend_attempts_total", dimensions: [("backend", backend), ("result", result.rawValue)])
        }
        self.attempts = attempts
        retries = Counter(label: "llmq_backend_retries_total", dimensions: [("backend", backend)])
        fallbacks = Counter(label: "llmq_fallbacks_total", dimensions: [("backend", backend)])
    }

    func attempt(_ result: Result) {
        attempts[result]?.increment()
    }

    func retry() {
        retries.increment()
    }

    func fallback() {
        fallbacks.increment()
    }
}
