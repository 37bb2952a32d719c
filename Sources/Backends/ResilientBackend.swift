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

        /// Full jitter (``Backoff``), but never shorter than the server's `Retry-After`.
        func backoff(afterAttempt attempt: Int, retryAfter: Duration?) -> Duration {
            let jittered = Backoff(initial: initialBackoff, maximum: maxBackoff).delay(afterFailures: attempt)
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
            MemberSelection.Profile(models: models, weight: weight).serves(model)
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

    let primaries: Tier
    let fallbacks: Tier
    /// Signalled whenever a backend slot is given back: a reader waiting for free slots
    /// (``freeSlots``) waits on it instead of polling.
    public let slotChanges: SlotChanges
    /// The pool's slot leases, shared by every worker (``shareSlots(through:)``); nil: this
    /// worker counts its backends' slots alone.
    let ledger = NIOLockedValueBox<(any SlotLedger)?>(nil)
    public let retry: RetryPolicy
    /// Whether a request that continues a conversation (``ChatRequest/affinityKey``) goes to the
    /// backend that holds its prefix, when that one has a slot free (`affinity.enabled`).
    public let affinity: Bool
    /// How long a conversation's turn may wait for a slot of its home (see `affinity.maxWaitMs`).
    public let affinityWait: Duration
    let affinityMetrics = AffinityMetrics()
    private let logger: Logger

    /// The first primary backend (its name labels requests that reached no backend).
    public var primary: any ChatBackend { primaries.members[0].backend }
    /// The first fallback, if any.
    public var fallback: (any ChatBackend)? { fallbacks.members.first?.backend }

    /// A pool of `members`, with `fallbacks` used only when none of them can take a request.
    /// - Precondition: `members` is not empty.
    public init(
        members: [Member], fallbacks: [Member] = [], retry: RetryPolicy, breaker: BreakerPolicy, affinity: Bool = true,
        affinityWait: Duration = .milliseconds(500), logger: Logger
    ) {
        precondition(!members.isEmpty, "a backend pool needs a member")
        self.affinity = affinity
        self.affinityWait = affinityWait
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

    /// Learns the slot counts of backends that have none configured or learned yet (llama-server's
    /// `/props`).
    /// - Parameter openWhenDown: A llama-server that does not answer starts with one slot and
    ///   its breaker open (in a pool, where the others take its share); otherwise it keeps no
    ///   limit and requests find out.
    public func discoverSlots(openWhenDown: Bool) async {
        await primaries.discoverSlots(openWhenDown: openWhenDown, logger: logger)
        await fallbacks.discoverSlots(openWhenDown: openWhenDown, logger: logger)
    }

    /// Whether a llama-server's slot count is still unknown (it did not answer `/props` yet):
    /// ask again with ``discoverSlots(openWhenDown:)``.
    public var lacksSlots: Bool { primaries.lacksSlots || fallbacks.lacksSlots }

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
    ///   - ticket: The pool slot taken for it at intake (``reservePoolSlots(upTo:)``); its
    ///     backend is preferred, and a call elsewhere takes a pool slot of its own.
    ///   - deadline: No retry starts after this instant.
    ///   - sink: Streams the answer: each call is announced, then its text handed over as it
    ///     is generated.
    public func complete(
        _ request: ChatRequest, deadline: ContinuousClock.Instant? = nil, streamingTo sink: (any CompletionStreamSink)? = nil,
        ticket: SlotTicket? = nil
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
                let preferred = await affinityPreference(for: request, on: tier, ticket: ticket) ?? ticket?.backend
                switch await tier.choose(model: request.model, preferring: preferred, deadline: deadline) {
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
                guard let poolSlot = await poolSlot(of: tier, index, ticket: ticket, deadline: deadline) else {
                    tier.finished(index)
                    if isProbe { tier.breakers[index].releaseProbe() }
                    lastError = BackendError(.busy, "every slot of \(member.name) stayed held by other workers until the request's deadline")
                    break tiers
                }
                lastBackend = member.name
                if attempt > 1 { tier.metrics[index].retry() }
                if tier === fallbacks && attempt == 1 { tier.metrics[index].fallback() }
                switch await call(request, on: tier, index, holding: poolSlot, attempt: attempts, sink: sink) {
                case .success(let completion):
                    tier.breakers[index].recordSuccess()
                    return Outcome(completion: completion, attempts: attempts)
                case .failure(let error):
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

    /// One call to member `index` of `tier`, which holds a slot of it (and `poolSlot`): both are
    /// given back when the call ends, and the attempt is counted.
    private func call(
        _ request: ChatRequest, on tier: Tier, _ index: Int, holding poolSlot: PoolSlot, attempt: Int, sink: (any CompletionStreamSink)?
    ) async -> Result<ChatCompletion, BackendError> {
        let member = tier.members[index]
        let result: Result<ChatCompletion, BackendError>
        do {
            if let sink {
                sink.attemptStarted(attempt, backend: member.name)
                result = .success(try await member.backend.complete(request, onText: sink.received))
            } else {
                result = .success(try await member.backend.complete(request))
            }
        } catch {
            result = .failure(error)
        }
        // The pool slot first: a reader woken by `finished` finds it free.
        await release(poolSlot)
        tier.finished(index)
        switch result {
        case .success: tier.metrics[index].attempt(.ok)
        case .failure(let error): tier.metrics[index].attempt(error.isTransient ? .transientError : .permanentError)
        }
        return result
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
