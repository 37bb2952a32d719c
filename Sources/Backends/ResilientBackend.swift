import Logging
import Metrics
import NIOConcurrencyHelpers

/// Several backends behind one worker, with retries, per-backend circuit breakers, weights,
/// model routing, slot accounting and fallbacks.
///
/// Each request goes to one of the `members` that serves its model, whose breaker lets requests
/// through and (preferably) that has a free slot; among those, the one furthest behind its
/// `weight` in recent starts (so weights 9 and 1 split traffic 90/10, and weights equal to the
/// slot counts split it by capacity). Transient failures (refused, timeout, 5xx, 503, 429) are
/// retried with exponential backoff and jitter, each try choosing again, so a failing backend's
/// share goes to the others. Each backend has its own breaker: `failureThreshold` consecutive
/// transient failures open it for `openDuration`, after which one request probes it. When no
/// member can take the request, the `fallbacks` are tried the same way; with no fallbacks the
/// request waits for a probe (``waitUntilAvailable()`` holds new requests in the queue
/// meanwhile). Permanent errors (a 4xx such as llama-server's `exceed_context_size_error`) are
/// returned at once and do not count against the backend: it answered. A request naming a
/// model no backend serves gets `model_not_found` without any call.
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

    /// One backend of the pool and how it shares the traffic.
    public struct Member: Sendable {
        public var backend: any ChatBackend
        /// Share among members serving the same model; nil: its slot count (or 1).
        public var weight: Double?
        /// The models it serves; nil: any.
        public var models: Set<String>?
        /// Requests it takes at once; nil: no limit of llmq's.
        public var slots: Int?

        public init(backend: any ChatBackend, weight: Double? = nil, models: Set<String>? = nil, slots: Int? = nil) {
            self.backend = backend
            self.weight = weight
            self.models = models
            self.slots = slots
        }

        var name: String { backend.name }

        func serves(_ model: String?) -> Bool {
            guard let model, let models else { return true }
            return models.contains(model)
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
        /// The backend of the last call; nil when none was made.
        public var backend: String?

        public init(error: BackendError, attempts: Int, backend: String? = nil) {
            self.error = error
            self.attempts = attempts
            self.backend = backend
        }
    }

    /// One tier of members (the primaries, or the fallbacks) with their breakers and counters.
    final class Tier: Sendable {
        let members: [Member]
        let breakers: [CircuitBreaker]
        let metrics: [BackendMetrics]
        private struct State {
            var inFlight: [Int]
            /// Each member's slots: configured, learned at start, or nil (no limit).
            var slots: [Int?]
            /// Starts, decaying (each start multiplies all by `1 - 1/64`), for the weights.
            var recentStarts: [Double]
        }
        private let state: NIOLockedValueBox<State>
        /// Signalled whenever a slot is given back.
        let slotChanges: SlotChanges

        init(members: [Member], breaker: BreakerPolicy, slotChanges: SlotChanges) {
            self.slotChanges = slotChanges
            self.members = members
            self.breakers = members.map { CircuitBreaker(policy: breaker, backend: $0.name) }
            self.metrics = members.map { BackendMetrics(backend: $0.name) }
            self.state = NIOLockedValueBox(State(
                inFlight: Array(repeating: 0, count: members.count), slots: members.map(\.slots),
                recentStarts: Array(repeating: 0, count: members.count)))
        }

        /// What ``choose(model:deadline:)`` found.
        enum Choice {
            /// This member, with its breaker permission (a probe or not) and a slot taken.
            case member(index: Int, isProbe: Bool)
            /// No member serving the model lets requests through.
            case unavailable
            /// Every member that could take it stayed full until the deadline.
            case full
        }

        /// The member for the next call: serving the model, its breaker letting requests
        /// through, a free slot, then furthest behind its weight. Takes its breaker permission
        /// (a probe, when the breaker's open period is over) and a slot in the same critical
        /// section as the check, so two requests never take one free slot; when every such
        /// member is full, waits for a slot to be given back (``finished(_:)``), not polling.
        func choose(model: String?, deadline: ContinuousClock.Instant?) async -> Choice {
            while true {
                let generation = slotChanges.generation
                let now = ContinuousClock.now
                let choice: Choice? = state.withLockedValue { state in
                    var tried: Set<Int> = []
                    while true {
                        let eligible = members.indices.filter { index in
                            !tried.contains(index) && members[index].serves(model) && weight(index, state) > 0
                                && breakers[index].timeUntilProbe(at: now) == nil
                        }
                        if eligible.isEmpty { return .unavailable }
                        let free = eligible.filter { index in state.slots[index].map { state.inFlight[index] < $0 } ?? true }
                        // All full: wait for a slot rather than overfill a backend.
                        if free.isEmpty { return nil }
                        let index = free.min { left, right in
                            let l = state.recentStarts[left] / weight(left, state)
                            let r = state.recentStarts[right] / weight(right, state)
                            if l != r { return l < r }
                            return state.inFlight[left] < state.inFlight[right]
                        }!
                        switch breakers[index].permission(at: now) {
                        case .denied:
                            tried.insert(index)  // another request took the probe first
                        case .granted(let isProbe):
                            state.inFlight[index] += 1
                            for member in state.recentStarts.indices { state.recentStarts[member] *= 1 - 1.0 / 64 }
                            state.recentStarts[index] += 1
                            return .member(index: index, isProbe: isProbe)
                        }
                    }
                }
                if let choice { return choice }
                if let deadline, ContinuousClock.now >= deadline { return .full }
                if Task.isCancelled { return .unavailable }
                await slotChanges.wait(after: generation, until: deadline)
            }
        }

        /// A member's weight: configured, else its slots (so traffic follows capacity), else 1.
        private func weight(_ index: Int, _ state: State) -> Double {
            members[index].weight ?? Double(state.slots[index] ?? 1)
        }

        /// Asks each member without configured slots for its slot count (llama-server's
        /// `/props`). One that does not answer starts with 1 slot and its breaker open, so it
        /// joins when a probe succeeds; a server that cannot tell keeps no limit.
        func discoverSlots(openWhenDown: Bool, logger: Logger) async {
            for (index, member) in members.enumerated() where member.slots == nil {
                let discovered = await member.backend.parallelSlots()
                if let discovered {
                    state.withLockedValue { $0.slots[index] = discovered }
                    logger.info("backend slots", metadata: ["llmq.backend": "\(member.name)", "llmq.slots": "\(discovered)"])
                } else if member.backend.reportsSlots && openWhenDown {
                    state.withLockedValue { $0.slots[index] = 1 }
                    breakers[index].open()
                    logger.warning("backend not answering at start; it joins when a probe succeeds", metadata: ["llmq.backend": "\(member.name)"])
                }
            }
        }

        func finished(_ index: Int) {
            state.withLockedValue { $0.inFlight[index] -= 1 }
            slotChanges.signal()
        }

        var inFlight: Int { state.withLockedValue { $0.inFlight.reduce(0, +) } }

        /// Free slots of the members whose breakers let requests through: `.unlimited` when one
        /// of them has no slot limit, `.none` when no member lets requests through.
        func freeSlots(at now: ContinuousClock.Instant) -> FreeSlots {
            state.withLockedValue { state in
                var total = 0
                var available = false
                for index in members.indices where breakers[index].timeUntilProbe(at: now) == nil && weight(index, state) > 0 {
                    available = true
                    guard let slots = state.slots[index] else { return .unlimited }
                    total += max(0, slots - state.inFlight[index])
                }
                return available ? .count(total) : .none
            }
        }

        enum FreeSlots {
            case unlimited
            case count(Int)
            case none
        }

        /// When the first breaker lets a probe through; nil when one lets requests through now.
        func timeUntilAvailable(at now: ContinuousClock.Instant) -> Duration? {
            var soonest: Duration?
            for breaker in breakers {
                guard let wait = breaker.timeUntilProbe(at: now) else { return nil }
                soonest = min(soonest ?? wait, wait)
            }
            return soonest
        }

        func serves(_ model: String?) -> Bool {
            members.contains { $0.serves(model) }
        }
    }

    let primaries: Tier
    let fallbacks: Tier
    /// Signalled whenever a backend slot is given back: a reader waiting for free slots
    /// (``freeSlots``) waits on it instead of polling.
    public let slotChanges: SlotChanges
    public let retry: RetryPolicy
    private let logger: Logger

    /// The first primary backend (its name labels requests that reached no backend).
    public var primary: any ChatBackend { primaries.members[0].backend }
    /// The first fallback, if any.
    public var fallback: (any ChatBackend)? { fallbacks.members.first?.backend }

    /// A pool of `members`, with `fallbacks` used only when none of them can take a request.
    /// - Precondition: `members` is not empty.
    public init(members: [Member], fallbacks: [Member] = [], retry: RetryPolicy, breaker: BreakerPolicy, logger: Logger) {
        precondition(!members.isEmpty, "a backend pool needs a member")
        self.slotChanges = SlotChanges()
        self.primaries = Tier(members: members, breaker: breaker, slotChanges: slotChanges)
        self.fallbacks = Tier(members: fallbacks, breaker: breaker, slotChanges: slotChanges)
        self.retry = retry
        self.logger = logger
    }

    /// One primary and an optional fallback, as `backend` and `fallback` configure them.
    public convenience init(primary: any ChatBackend, fallback: (any ChatBackend)?, retry: RetryPolicy, breaker: BreakerPolicy, logger: Logger) {
        self.init(
            members: [Member(backend: primary)], fallbacks: fallback.map { [Member(backend: $0)] } ?? [],
            retry: retry, breaker: breaker, logger: logger)
    }

    /// Closes every backend's connections.
    public func shutdown() {
        for member in primaries.members + fallbacks.members { member.backend.shutdown() }
    }

    /// Whether no primary backend lets requests through now (for readiness and tests).
    public var isPrimaryOpen: Bool { primaries.timeUntilAvailable(at: .now) != nil }

    /// Free slots of the backends that let requests through (the primaries', else the
    /// fallbacks'); nil when one of them has no slot limit, or when none lets requests through
    /// (``waitUntilAvailable()`` then decides).
    public var freeSlots: Int? {
        let now = ContinuousClock.now
        for tier in [primaries, fallbacks] {
            switch tier.freeSlots(at: now) {
            case .unlimited: return nil
            case .count(let free): return free
            case .none: continue
            }
        }
        return nil
    }

    /// Learns the slot counts of backends that have none configured (llama-server's `/props`).
    /// - Parameter openWhenDown: A llama-server that does not answer starts with one slot and
    ///   its breaker open (in a pool, where the others take its share); otherwise it keeps no
    ///   limit and requests find out.
    public func discoverSlots(openWhenDown: Bool) async {
        await primaries.discoverSlots(openWhenDown: openWhenDown, logger: logger)
        await fallbacks.discoverSlots(openWhenDown: openWhenDown, logger: logger)
    }

    /// Requests at the backends now (calls in progress).
    public var inFlight: Int { primaries.inFlight + fallbacks.inFlight }

    /// Returns at once unless every primary's circuit is open and there is no fallback; then
    /// waits until a probe may go out. Workers call it before taking new requests.
    public func waitUntilAvailable() async throws {
        guard fallbacks.members.isEmpty else { return }
        while let wait = primaries.timeUntilAvailable(at: .now) {
            try await Task.sleep(for: wait)
        }
    }

    /// Completes the request on the primaries, retrying transient failures, then on the fallbacks.
    /// - Parameters:
    ///   - deadline: No retry starts after this instant.
    ///   - sink: Streams the answer: each call is announced, then its text handed over as it
    ///     is generated.
    public func complete(
        _ request: ChatRequest, deadline: ContinuousClock.Instant? = nil, streamingTo sink: (any CompletionStreamSink)? = nil
    ) async throws(Failure) -> Outcome {
        guard primaries.serves(request.model) || fallbacks.serves(request.model) else {
            throw Failure(error: BackendError(.modelNotFound, "no backend of this worker serves the model \(request.model ?? "")"), attempts: 0)
        }
        var attempts = 0
        var lastError: BackendError?
        var lastBackend: String?
        tiers: for tier in [primaries, fallbacks] where !tier.members.isEmpty && tier.serves(request.model) {
            var attempt = 0
            attempts: while attempt < retry.maxAttempts {
                let index: Int
                let isProbe: Bool
                switch await tier.choose(model: request.model, deadline: deadline) {
                case .member(let chosen, let probe):
                    (index, isProbe) = (chosen, probe)
                case .full:
                    lastError = BackendError(
                        .busy, "every backend serving \(request.model.map { "the model \($0)" } ?? "this request") stayed full until the request's deadline")
                    break tiers
                case .unavailable:
                    // Every breaker is open: go to the fallbacks, or with none (and on the
                    // primaries), wait for a probe unless that passes the deadline.
                    guard tier === primaries, fallbacks.members.isEmpty || !fallbacks.serves(request.model),
                        let wait = tier.timeUntilAvailable(at: .now)
                    else { break attempts }
                    if let deadline, ContinuousClock.now + wait >= deadline { break attempts }
                    do {
                        try await Task.sleep(for: wait)
                    } catch {
                        break attempts
                    }
                    continue
                }
                attempt += 1
                attempts += 1
                let member = tier.members[index]
                lastBackend = member.name
                if attempt > 1 { tier.metrics[index].retry() }
                if tier === fallbacks && attempt == 1 { tier.metrics[index].fallback() }
                do {
                    let completion: ChatCompletion
                    if let sink {
                        sink.attemptStarted(attempts, backend: member.name)
                        completion = try await member.backend.complete(request, onText: sink.received)
                    } else {
                        completion = try await member.backend.complete(request)
                    }
                    tier.finished(index)
                    tier.metrics[index].attempt(.ok)
                    tier.breakers[index].recordSuccess()
                    return Outcome(completion: completion, attempts: attempts)
                } catch {
                    tier.finished(index)
                    tier.metrics[index].attempt(error.isTransient ? .transientError : .permanentError)
                    if Task.isCancelled {
                        // A cancelled probe proved nothing: let the next request probe.
                        if isProbe { tier.breakers[index].releaseProbe() }
                        throw Failure(error: error, attempts: attempts, backend: member.name)
                    }
                    guard error.isTransient else {
                        tier.breakers[index].recordSuccess()
                        throw Failure(error: error, attempts: attempts, backend: member.name)
                    }
                    lastError = error
                    if tier.breakers[index].recordFailure(wasProbe: isProbe) {
                        logger.warning("backend circuit opened", metadata: [
                            "llmq.backend": "\(member.name)", "llmq.error": "\(error.message)",
                        ])
                    }
                }
                if attempt < retry.maxAttempts {
                    guard await sleepBeforeRetry(attempt: attempt, error: lastError, deadline: deadline) else { break attempts }
                }
            }
        }
        let error = lastError ?? BackendError(.unavailable, "\(primary.name) is failing (circuit open) and no fallback is configured")
        throw Failure(error: error, attempts: attempts, backend: lastBackend)
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

/// Receives a streamed answer as it is generated, across retries and fallbacks.
public protocol CompletionStreamSink: Sendable {
    /// A call to `backend` starts; `attempt` counts the request's calls from 1. Text received
    /// before it came from a call that failed and is not part of the answer.
    func attemptStarted(_ attempt: Int, backend: String)
    /// Text generated by the current call.
    func received(_ text: String)
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
