import Foundation
import LLMQBackends
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// A consumer in the request stream's group: it claims entries, runs up to `concurrency` of them
/// at once against the backend, and replies to and acknowledges each exactly once.
///
/// On graceful shutdown (SIGTERM/SIGINT through a `ServiceGroup`) it stops reading, gives the
/// requests in flight `shutdownGrace` to finish and reply, then cancels the rest, which stay
/// pending for other consumers: an entry is never acknowledged without its reply.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    private let backend: ResilientBackend
    private let stream: RequestStream
    /// Each queue's parser, by its request stream: in cluster mode a queue in its own slot has
    /// its own `reply_to` prefix and keys (``WorkerConfiguration/Streams/serving(_:)``).
    private let parsers: [String: RequestParser]
    private let slots: Slots
    private let logger: Logger
    private let isStopping = NIOLockedValueBox<Bool>(false)
    /// Entries being worked on, refreshed so that no other consumer claims them meanwhile, each
    /// with the handle that stops its work when the entry is no longer ours.
    private let inFlight = NIOLockedValueBox<[EntryKey: EntryControl]>([:])
    /// The queues served, highest priority first.
    private let queues: [WorkerConfiguration.Queue]
    private let metrics: WorkerMetrics
    private let health: WorkerHealth
    private let lease: ConsumerNameLease?

    /// - Parameters:
    ///   - configuration: A validated configuration.
    ///   - backend: The backend chain (primary, fallback, retries).
    ///   - logger: Request logs carry `llmq.request.*` metadata; prompts are never logged.
    ///   - lease: The lease on the consumer name (``ConsumerNameLease``), renewed while the worker
    ///     runs and released when it stops; its name replaces `configuration.consumer`.
    public init(configuration: WorkerConfiguration, backend: ResilientBackend, logger: Logger, lease: ConsumerNameLease? = nil) {
        var configuration = configuration
        if let lease { configuration.consumer = lease.name }
        self.lease = lease
        self.configuration = configuration
        self.backend = backend
        self.queues = configuration.effectiveQueues.sorted { $0.priority > $1.priority }
        self.stream = RequestStream(
            redis: configuration.redis, streams: configuration.streams, consumer: configuration.consumer,
            readBlock: configuration.readBlock)
        self.parsers = Self.parsers(for: configuration)
        self.slots = Slots(capacity: configuration.concurrency)
        self.metrics = WorkerMetrics(configuration: configuration, queues: configuration.effectiveQueues)
        self.health = WorkerHealth(configuration: configuration)
        var logger = logger
        logger[metadataKey: "llmq.consumer"] = "\(configuration.consumer)"
        self.logger = logger
    }

    /// One parser per queue, by its request stream: in cluster mode a queue in its own slot has
    /// its own `reply_to` prefix and keys. Every queue's own streams are reserved for all.
    private static func parsers(for configuration: WorkerConfiguration) -> [String: RequestParser] {
        let queues = configuration.effectiveQueues
        var reserved = Set(queues.map(\.stream))
        reserved.insert(configuration.streams.requests)
        for queue in queues {
            let streams = configuration.streams.serving(queue.stream)
            reserved.insert(streams.dead)
            reserved.insert(streams.answered)
        }
        var parsers: [String: RequestParser] = [:]
        for queue in queues {
            let streams = configuration.streams.serving(queue.stream)
            parsers[queue.stream] = RequestParser(
                limits: configuration.limits, replyToPrefix: streams.replyToPrefix, reservedStreams: reserved,
                replies: streams.replies, clusterSlotOf: streams.cluster ? queue.stream : nil)
        }
        return parsers
    }

    /// Builds the backends a configuration names and a worker over them.
    /// - Throws: ``ConfigurationError`` when an endpoint cannot be used.
    public convenience init(configuration: WorkerConfiguration, logger: Logger, lease: ConsumerNameLease? = nil) throws(ConfigurationError) {
        func make(_ backend: BackendConfiguration, key: String) throws(ConfigurationError) -> any ChatBackend {
            do {
                return try makeChatBackend(backend, maxConcurrentRequests: configuration.concurrency)
            } catch {
                throw ConfigurationError(key: key, source: "", problem: error.reason)
            }
        }
        func members(_ backends: [BackendConfiguration], key: String) throws(ConfigurationError) -> [ResilientBackend.Member] {
            var members: [ResilientBackend.Member] = []
            for (index, backend) in backends.enumerated() {
                members.append(ResilientBackend.Member(
                    backend: try make(backend, key: "\(key)[\(index)].endpoint"), weight: backend.weight,
                    models: backend.models.map { Set($0 + (backend.model.map { [$0] } ?? [])) }, slots: backend.slots))
            }
            return members
        }
        let primaries: [ResilientBackend.Member]
        if configuration.backends.isEmpty {
            primaries = [ResilientBackend.Member(backend: try make(configuration.backend, key: "backend.endpoint"))]
        } else {
            primaries = try members(configuration.backends, key: "backends")
        }
        var fallbacks = try members(configuration.fallbacks, key: "fallbacks")
        if fallbacks.isEmpty, let fallback = configuration.fallback {
            fallbacks = [ResilientBackend.Member(backend: try make(fallback, key: "fallback.endpoint"))]
        }
        let resilient = ResilientBackend(
            members: primaries, fallbacks: fallbacks,
            retry: .init(
                maxAttempts: configuration.retry.maxAttempts, initialBackoff: configuration.retry.initialBackoff,
                maxBackoff: configuration.retry.maxBackoff),
            breaker: .init(failureThreshold: configuration.breaker.failureThreshold, openDuration: configuration.breaker.openDuration),
            logger: logger)
        self.init(configuration: configuration, backend: resilient, logger: logger, lease: lease)
    }

    /// Serves until graceful shutdown or cancellation; then closes its Redis and backend
    /// connections, so a worker runs once.
    public func run() async throws {
        defer {
            stream.shutdown()
            backend.shutdown()
        }
        var startup: Logger.Metadata = [
            "llmq.queues": "\(queues.map { "\($0.name)=\($0.stream) p\($0.priority) w\($0.weight)" }.joined(separator: ", "))",
            "llmq.group": "\(configuration.streams.group)",
            "llmq.backend": "\(backend.primary.name)", "llmq.concurrency": "\(configuration.concurrency)",
        ]
        if let description = configuration.backend.description { startup["llmq.backend.description"] = "\(description)" }
        if let model = configuration.backend.model { startup["llmq.backend.model"] = "\(model)" }
        logger.info("worker starting", metadata: startup)
        if let note = lease?.note { logger.warning("\(note)") }
        // A pool learns its llama-servers' slots; a single `backend` runs as before, its
        // requests limited by `concurrency` only.
        if !configuration.backends.isEmpty { await backend.discoverSlots(openWhenDown: configuration.backends.count > 1) }
        let fatal = NIOLockedValueBox<WorkerError?>(nil)
        try await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.refreshLoop() }
                if configuration.metrics.port != nil {
                    group.addTask { await self.queueGaugeLoop() }
                }
                if let idle = configuration.recovery.deleteIdleConsumersAfter {
                    group.addTask { await self.tidyLoop(idle: idle) }
                }
                if let error = await readLoop(group: &group) {
                    // Nothing more is read; requests in flight finish and reply as on shutdown.
                    fatal.withLockedValue { $0 = error }
                }
                if !(await slots.waitUntilIdle(timeout: configuration.shutdownGrace)) {
                    logger.warning("shutdown grace period over; unfinished requests stay pending for other consumers", metadata: [
                        "llmq.inflight": "\(slots.inUse)"
                    ])
                }
                group.cancelAll()
            }
            await removeSelfFromGroup()
            await lease?.release(on: stream.writer)
            try Task.checkCancellation()
        } onGracefulShutdown: {
            self.stop()
        }
        if let error = fatal.withLockedValue({ $0 }) {
            logger.critical("worker stopped: \(error)")
            throw error
        }
        logger.info("worker stopped")
    }

    /// Stops taking new entries; requests in flight go on.
    public func stop() {
        isStopping.withLockedValue { $0 = true }
        health.markStopping()
        metrics.ready.record(0)
        stream.reader.interrupt()
        slots.wakeReader()
    }

    private var stopping: Bool { isStopping.withLockedValue { $0 } || Task.isCancelled }

    /// Ollama and OpenAI-compatible servers need a model name; llama-server serves the one it
    /// loaded. With none configured, each request must name its own.
    private var backendNeedsModel: Bool {
        configuration.backend.model == nil && configuration.backend.kind != .llamaCpp
    }

    // MARK: - Health

    /// `/healthz`: false when the read loop has been in one wait longer than it can legitimately
    /// last (see ``WorkerHealth``).
    public func liveness() -> (isHealthy: Bool, detail: String) {
        health.liveness()
    }

    /// `/readyz`: Redis answered the last call, the group exists, and the backend can take
    /// requests (its circuit is closed, or a fallback is configured). Also sets `llmq_ready`.
    public func readiness() -> (isReady: Bool, detail: String) {
        let verdict = health.readiness(circuitOpenWithoutFallback: backend.fallback == nil && backend.isPrimaryOpen)
        metrics.ready.record(verdict.isReady ? 1 : 0)
        return verdict
    }

    // MARK: - Reading

    /// Reads until stopped. Returns an error that no retry can fix (Redis refused the
    /// credentials), after which the worker must stop.
    private func readLoop(group: inout DiscardingTaskGroup) async -> WorkerError? {
        var failures = 0
        var groupReady = false
        var claimCursors = Array(repeating: "0-0", count: queues.count)
        var nextClaim = ContinuousClock.now
        var scheduler = IntakeScheduler(queues: queues.map { .init(priority: $0.priority, weight: $0.weight, minimumShare: $0.minimumShare) })
        while !stopping {
            health.enter(.working)
            do {
                if !groupReady {
                    for queue in queues { try await stream.ensureGroup(on: queue.stream) }
                    // Chunk writes are pipelined from the Redis thread as EVALSHA, which needs
                    // the script's SHA-1 (a server that lost it answers NOSCRIPT; they fall back).
                    try await Scripts.chunks.load(on: stream.writer)
                    groupReady = true
                    health.redisSucceeded(groupReady: true)
                    _ = readiness()
                    if failures > 0 { logger.info("connected to Redis again") }
                }
                health.enter(.waitingForBackend)
                try await backend.waitUntilAvailable()
                health.enter(.waitingForSlot)
                let backendGeneration = backend.slotChanges.generation
                var free = await slots.waitForFree()
                // Only as many as the backends have free slots for, so that work waits in the
                // stream, where any worker can take it, not inside one busy backend.
                if let backendSlots = backend.freeSlots {
                    // Requests taken but not yet at a backend will use some of those slots.
                    let waiting = max(0, slots.inUse - backend.inFlight)
                    free = min(free, max(0, backendSlots - waiting))
                    if free == 0 {
                        // Woken when a backend slot is given back (or a breaker's state may
                        // have changed, hence the bound).
                        await backend.slotChanges.wait(after: backendGeneration, until: .now + .milliseconds(100))
                        continue
                    }
                }
                health.enter(.working)
                if stopping || free == 0 { continue }

                // Whatever is taken is started, even when a later command of this round fails:
                // taken entries are pending on this consumer, and left alone they would wait
                // for a claim and come back with one more delivery.
                var taken: [RequestStream.Delivery] = []
                var failure: RedisError?
                do throws(RedisError) {
                    try await take(free: free, into: &taken, claimCursors: &claimCursors, nextClaim: &nextClaim, scheduler: &scheduler)
                } catch {
                    failure = error
                }
                start(taken, group: &group)
                if let failure { throw failure }
                failures = 0
                health.redisSucceeded(groupReady: true)
            } catch let error as RedisError {
                if stopping { break }
                health.redisFailed(error.description)
                if error.isAuthenticationFailure {
                    stream.reader.interrupt()
                    return WorkerError(.redisAuthentication, error.message)
                }
                if error.isServerError("NOGROUP") {
                    // The stream or group was deleted (or Redis lost its data): create it again.
                    groupReady = false
                    logger.warning("consumer group missing; creating it again")
                    continue
                }
                failures += 1
                groupReady = groupReady && error.code != .connection
                let wait = Backoff.redis.delay(afterFailures: failures, initial: .milliseconds(100))
                logger.warning("Redis unavailable; retrying", metadata: [
                    "llmq.error": "\(error)", "llmq.retry_in_ms": "\(wait.milliseconds)",
                ])
                try? await Task.sleep(for: wait)
            } catch {
                // Cancellation while waiting for the backend's circuit.
                if stopping { break }
            }
        }
        stream.reader.interrupt()
        return nil
    }

    /// Takes up to `free` entries into `taken`: entries abandoned by dead consumers first (every
    /// `claimInterval`, by priority), else new ones. Entries are appended as each command
    /// returns them, so a failure later in the round loses none.
    private func take(
        free: Int, into taken: inout [RequestStream.Delivery], claimCursors: inout [String],
        nextClaim: inout ContinuousClock.Instant, scheduler: inout IntakeScheduler
    ) async throws(RedisError) {
        if ContinuousClock.now >= nextClaim {
            nextClaim = ContinuousClock.now + configuration.recovery.claimInterval
            for (index, queue) in queues.enumerated() where taken.count < free {
                let claimed = try await stream.claimIdle(
                    on: queue.stream, minIdle: configuration.recovery.claimMinIdle, count: free - taken.count,
                    cursor: &claimCursors[index])
                taken += claimed
                if !claimed.isEmpty {
                    metrics.claims.increment(by: claimed.count)
                    logger.notice("claimed entries idle on other consumers", metadata: ["llmq.count": "\(claimed.count)"])
                }
            }
        }
        if taken.isEmpty {
            try await readNew(free: free, into: &taken, scheduler: &scheduler)
        }
    }

    /// Starts a task for each entry taken (unless it is running here already).
    private func start(_ entries: [RequestStream.Delivery], group: inout DiscardingTaskGroup) {
        let claimedAt = ContinuousClock.now
        let claimedAtWall = Date().timeIntervalSince1970 * 1000
        for delivery in entries {
            let key = EntryKey(stream: delivery.stream, id: delivery.entry.id)
            let control = EntryControl()
            let isRunningHere = inFlight.withLockedValue { inFlight in
                // Deleted while this worker runs it, and taken out of the group by our own
                // XAUTOCLAIM: the running task answers it (see `publish`).
                if inFlight[key] != nil { return true }
                if delivery.removedFromGroup { return false }
                inFlight[key] = control
                return false
            }
            if isRunningHere { continue }
            slots.take()
            metrics.inFlight.record(slots.inUse)
            group.addTask {
                // The work runs in a task of its own so that a lost lease can cancel just this
                // request (``EntryControl``); shutdown's cancellation reaches it through here.
                let work = Task { await self.handle(delivery, claimedAt: claimedAt, claimedAtWall: claimedAtWall, control: control) }
                control.onCancel { work.cancel() }
                await withTaskCancellationHandler {
                    await work.value
                } onCancel: {
                    work.cancel()
                }
                // Its actions hold the task and the chunk stream, which hold the control back.
                control.finish()
                if !delivery.removedFromGroup { self.inFlight.withLockedValue { _ = $0.removeValue(forKey: key) } }
                self.slots.release()
                self.metrics.inFlight.record(self.slots.inUse)
            }
        }
    }

    /// Takes up to `free` new entries, the slots going by the scheduler's plan (minimum shares,
    /// then priority, then weight). Queues are read without waiting, round after round, until
    /// the slots are used or every queue came up short. When nothing at all was waiting, the
    /// worker watches every queue it serves (``RequestStream/waitForArrivals(after:block:)``)
    /// up to `readBlock`, and reads again as soon as anything arrives anywhere.
    private func readNew(free: Int, into taken: inout [RequestStream.Delivery], scheduler: inout IntakeScheduler) async throws(RedisError) {
        func deliveries(_ entries: [StreamEntry], from stream: String) -> [RequestStream.Delivery] {
            entries.map { RequestStream.Delivery(stream: stream, entry: $0, deliveries: 1, removedFromGroup: false) }
        }
        if queues.count == 1 {
            // One queue: one blocking read, as before queues existed.
            let stream = queues[0].stream
            taken += deliveries(try await self.stream.readNew(from: [stream], count: free, block: configuration.readBlock)[stream] ?? [], from: stream)
            return
        }
        let before = taken.count
        var available = Set(queues.indices)
        while taken.count - before < free, !available.isEmpty {
            let plan = scheduler.plan(free: free - (taken.count - before), available: available)
            if plan.isEmpty { break }
            let read = try await stream.readAvailable(plan.sorted { $0.key < $1.key }.map { (queues[$0.key].stream, $0.value) })
            var started: [Int: Int] = [:]
            for (index, count) in plan {
                let entries = read[queues[index].stream] ?? []
                if entries.count < count { available.remove(index) }
                started[index] = entries.count
                taken += deliveries(entries, from: queues[index].stream)
            }
            scheduler.recordStarts(started)
        }
        if taken.count == before {
            // Nothing waiting anywhere: watch every queue for new entries (entries after the
            // group's last delivered ID are new to the group, so none can slip by between
            // the reads above and this wait). The next round takes them by the plan.
            let last = try await stream.lastDeliveredIDs(of: queues.map(\.stream))
            _ = try await stream.waitForArrivals(after: last, block: configuration.readBlock)
        }
    }

    /// Every third of the claim idle time, resets the idle time of the entries in flight.
    private func refreshLoop() async {
        let interval = configuration.recovery.claimMinIdle / 3
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            if let lease {
                do {
                    if try await !lease.renew(on: stream.writer) {
                        logger.error("another worker holds this worker's consumer name now; stop one of them", metadata: [
                            "llmq.consumer": "\(lease.name)"
                        ])
                    }
                } catch {
                    logger.debug("could not renew the consumer name lease", metadata: ["llmq.error": "\(error)"])
                }
            }
            let keys = inFlight.withLockedValue { $0 }
            guard !keys.isEmpty else { continue }
            do {
                var lost: [(String, [String])] = []
                for (requests, entries) in Dictionary(grouping: keys.keys, by: \.stream) {
                    let claimed = try await stream.touch(entries.map(\.id), on: requests)
                    if !claimed.isEmpty { lost.append((requests, claimed)) }
                }
                if !lost.isEmpty {
                    metrics.leaseLosses.increment(by: lost.reduce(0) { $0 + $1.1.count })
                    logger.warning("entries in flight were claimed by another consumer; their work stops here", metadata: [
                        "llmq.count": "\(lost.reduce(0) { $0 + $1.1.count })"
                    ])
                }
                // The consumer that claimed them answers them: stop their backend calls and
                // chunk writes now, not when they end.
                for (requests, ids) in lost {
                    for id in ids { inFlight.withLockedValue { $0[EntryKey(stream: requests, id: id)] }?.cancel(.leaseLost) }
                }
            } catch {
                logger.warning("could not refresh entries in flight", metadata: ["llmq.error": "\(error)"])
            }
        }
    }

    /// Reads the queue's length, lag and pending entries for the gauges, every
    /// `metrics.queueInterval`.
    private func queueGaugeLoop() async {
        while !Task.isCancelled {
            do {
                for (queue, gauges) in zip(configuration.effectiveQueues, metrics.queues) {
                    var streams = configuration.streams
                    streams.requests = queue.stream
                    gauges.record(try await QueueStatus.read(from: stream.writer, streams: streams))
                }
            } catch {
                logger.debug("could not read the queue gauges", metadata: ["llmq.error": "\(error)"])
            }
            _ = readiness()
            do {
                try await Task.sleep(for: configuration.metrics.queueInterval)
            } catch {
                return
            }
        }
    }

    /// Removes consumers idle for `idle` with nothing pending, which scaled-down or killed
    /// workers leave behind; checks a quarter as often as the threshold, between 1 s and 1 min.
    private func tidyLoop(idle: Duration) async {
        let interval = min(.seconds(60), max(.seconds(1), idle / 4))
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval * Double.random(in: 0.75...1.25))
            } catch {
                return
            }
            do {
                var removed: [String] = []
                for queue in queues {
                    removed += try await stream.deleteIdleConsumers(on: queue.stream, minIdle: idle)
                }
                if !removed.isEmpty {
                    metrics.consumersDeleted.increment(by: removed.count)
                    logger.info("removed idle consumers with nothing pending from the group", metadata: [
                        "llmq.count": "\(removed.count)", "llmq.consumers": "\(removed.joined(separator: ","))",
                    ])
                }
            } catch {
                logger.debug("could not tidy idle consumers", metadata: ["llmq.error": "\(error)"])
            }
        }
    }

    /// On a clean stop, a worker with nothing pending leaves the group, so that scaling down
    /// leaves no names behind. With entries still pending it stays: they must be claimed.
    private func removeSelfFromGroup() async {
        guard configuration.recovery.deleteIdleConsumersAfter != nil else { return }
        for queue in queues {
            if (try? await stream.deleteIdleConsumers(on: queue.stream, minIdle: .zero, only: configuration.consumer))?.isEmpty == false {
                logger.debug("left the consumer group", metadata: ["llmq.stream": "\(queue.stream)"])
            }
        }
    }

    // MARK: - One request

    private func handle(
        _ delivery: RequestStream.Delivery, claimedAt: ContinuousClock.Instant, claimedAtWall: Double, control: EntryControl
    ) async {
        let entry = delivery.entry
        let queue = queues.first { $0.stream == delivery.stream }?.name ?? delivery.stream
        var logger = self.logger
        logger[metadataKey: "llmq.request.entry"] = "\(entry.id)"
        if !configuration.queues.isEmpty { logger[metadataKey: "llmq.request.queue"] = "\(queue)" }
        let queueMilliseconds = entry.timestampMilliseconds.map { claimedAtWall - Double($0) }
        let now = Int64(claimedAtWall)
        var replyStream = configuration.streams.replies
        var reply: Reply
        var deadLetter: RedisCommand?
        var backendTime: Duration?

        // A streamed answer's chunk stream, once the request says it wants one (even a broken
        // request's error goes there as its last chunk).
        var answer: AnswerStream?
        func streamTo(_ target: StreamTarget?, callerID: String?) {
            guard let target else { return }
            let owner = AnswerStream.Owner(
                requests: delivery.stream, group: configuration.streams.group, entryID: entry.id,
                consumer: configuration.consumer, marker: stream.lostMarker(delivery.stream, entry.id))
            let created = AnswerStream(
                key: streamKey(target, queue: queue, entryID: entry.id), id: callerID ?? entry.id,
                delivery: delivery.deliveries, owner: owner, writer: stream.writer, settings: configuration.streaming,
                onFenced: { control.cancel(.leaseLost) })
            control.onCancel { created.fence() }
            answer = created
        }

        let parser = parsers[delivery.stream] ?? parsers.values.first!
        if delivery.deliveries > configuration.recovery.maxDeliveries {
            let message = "delivered \(delivery.deliveries) times without an answer (the consumers handling it crashed or stalled); moved to \(configuration.streams.dead)"
            var callerID: String?
            if case .success(let request) = parser.parse(entry, now: now) {
                callerID = request.callerID
                replyStream = request.replyTo ?? replyStream
                streamTo(request.stream, callerID: callerID)
            }
            reply = .error(callerID: callerID, entryID: entry.id, code: "dead_letter", message: message)
            deadLetter = DeadLetter.record(
                of: entry, reason: message, deliveries: delivery.deliveries, queue: configuration.queues.isEmpty ? nil : queue)
            logger.warning("request dead-lettered", metadata: ["llmq.request.deliveries": "\(delivery.deliveries)"])
        } else {
            switch parser.parse(entry, now: now) {
            case .failure(let rejection):
                replyStream = rejection.replyTo ?? replyStream
                streamTo(rejection.stream, callerID: rejection.callerID)
                reply = .error(callerID: rejection.callerID, entryID: entry.id, code: rejection.code.rawValue, message: rejection.message)
                logger.notice("request rejected", metadata: [
                    "llmq.request.error_code": "\(rejection.code.rawValue)", "llmq.request.error": "\(rejection.message)",
                ])
            case .success(let request) where request.chat.model == nil && backendNeedsModel:
                replyStream = request.replyTo ?? replyStream
                streamTo(request.stream, callerID: request.callerID)
                let message = "the request names no model, and this worker's backend (\(configuration.backend.kind.rawValue)) needs one: add a model field, or set backend.model"
                reply = .error(callerID: request.callerID, entryID: entry.id, code: RequestRejection.Code.invalidRequest.rawValue, message: message)
                logger.notice("request rejected", metadata: [
                    "llmq.request.error_code": "\(RequestRejection.Code.invalidRequest.rawValue)", "llmq.request.error": "\(message)",
                ])
            case .success(let request):
                replyStream = request.replyTo ?? replyStream
                streamTo(request.stream, callerID: request.callerID)
                let deadline = request.deadlineMilliseconds.map { deadline in
                    // Both are non-negative (the contract bounds deadline_ms), so this cannot overflow.
                    claimedAt + .milliseconds(deadline.subtractingReportingOverflow(now).partialValue)
                }
                let started = ContinuousClock.now
                switch await complete(request.chat, deadline: deadline, streamingTo: answer) {
                case .success(let outcome):
                    backendTime = ContinuousClock.now - started
                    reply = .success(callerID: request.callerID, entryID: entry.id, completion: outcome.completion, attempts: outcome.attempts)
                    metrics.tokens(
                        prompt: outcome.completion.promptTokens, completion: outcome.completion.completionTokens,
                        backend: outcome.completion.backend)
                    if let firstToken = outcome.completion.firstTokenMilliseconds {
                        metrics.firstToken(milliseconds: firstToken, backend: outcome.completion.backend)
                    }
                case .failure(let error):
                    backendTime = ContinuousClock.now - started
                    if Task.isCancelled {
                        if control.reason == .leaseLost {
                            // Another consumer claimed it (this one stalled): that one answers.
                            logger.warning("request claimed by another consumer while it ran here; its work stopped, the other consumer answers it")
                        } else {
                            // Shutdown past its grace period: no reply, no acknowledgement; the
                            // entry stays pending and another consumer will take it.
                            logger.notice("request abandoned at shutdown; it stays pending")
                        }
                        return
                    }
                    reply = .error(
                        callerID: request.callerID, entryID: entry.id, code: error.error.code.rawValue,
                        message: error.error.message, backend: error.backend ?? backend.primary.name, attempts: error.attempts)
                    logger.warning("backend failed", metadata: [
                        "llmq.request.error_code": "\(error.error.code.rawValue)", "llmq.request.error": "\(error.error.message)",
                        "llmq.request.attempts": "\(error.attempts)",
                    ])
                }
            }
        }
        var lastChunk: RequestStream.LastChunk?
        if control.reason == .leaseLost { return }
        if let answer {
            let (seq, attempt, written, failure) = await answer.finish()
            metrics.streamChunks.increment(by: written)
            reply.add("stream", answer.key)
            if let failure { reply.add("stream_error", failure) }
            lastChunk = RequestStream.LastChunk(
                stream: answer.key, fields: answer.doneChunk(for: reply, seq: seq, attempt: attempt),
                expire: configuration.streaming.expire, maxLength: configuration.streaming.maxLength)
        }
        let total = ContinuousClock.now - claimedAt
        reply.addTimings(
            consumer: configuration.consumer, queueMilliseconds: queueMilliseconds,
            backendMilliseconds: backendTime?.fractionalMilliseconds,
            totalMilliseconds: total.fractionalMilliseconds)
        if !configuration.queues.isEmpty { reply.add("queue", queue) }
        let written = await publish(
            reply, for: entry.id, on: delivery.stream, to: replyStream, deadLetter: deadLetter, lastChunk: lastChunk,
            mode: delivery.removedFromGroup ? .lost : .owned, logger: logger)
        guard written else { return }
        metrics.replied(reply, queue: queue)
        if lastChunk != nil { metrics.streamChunks.increment() }
        if deadLetter != nil { metrics.deadLetters.increment() }
        if let queueMilliseconds { metrics.queueWait.recordNanoseconds(Int64(max(0, queueMilliseconds) * 1_000_000)) }
        if let backendTime {
            metrics.backendTime(backendTime, backend: reply.backend.isEmpty ? backend.primary.name : reply.backend)
        }
        metrics.overhead.recordNanoseconds((total - (backendTime ?? .zero)).nanoseconds)
    }

    /// Calls the backends; a streamed answer's chunks are written meanwhile by a task of their own.
    private func complete(
        _ chat: ChatRequest, deadline: ContinuousClock.Instant?, streamingTo answer: AnswerStream?
    ) async -> Result<ResilientBackend.Outcome, ResilientBackend.Failure> {
        guard let answer else {
            do {
                return .success(try await backend.complete(chat, deadline: deadline))
            } catch {
                return .failure(error)
            }
        }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask { await answer.run() }
            defer { group.cancelAll() }
            do throws(ResilientBackend.Failure) {
                return .success(try await backend.complete(chat, deadline: deadline, streamingTo: answer))
            } catch {
                return .failure(error)
            }
        }
    }

    /// The chunk stream of a streamed request: its `stream_to`, else its own.
    private func streamKey(_ target: StreamTarget, queue: String, entryID: String) -> String {
        switch target {
        case .named(let key): key
        case .perRequest: configuration.chunkStream(queue: queue, entryID: entryID)
        }
    }

    /// Replies and acknowledges, retrying with backoff while Redis is unreachable or answers a
    /// transient error (out of memory, loading, a failover: ``RedisError/isTransient``), which
    /// never changes where the reply goes. Gives up only when the task is cancelled; the entry
    /// then stays pending and is answered after a claim.
    ///
    /// After a lost connection an attempt may have written without our hearing of it; the
    /// retry learns that from the group (an entry neither pending nor marked lost was
    /// acknowledged, and only its reply acknowledges it: ``RequestStream/ReplyResult/replied``)
    /// rather than writing a second reply. An entry answered as lost is proven by its marker,
    /// which lives a day: past half of that, such a retry stops rather than risk a second reply.
    /// - Returns: Whether the reply is written by this worker (false when the entry was no
    ///   longer ours).
    private func publish(
        _ reply: Reply, for entryID: String, on requests: String, to replyStream: String, deadLetter: RedisCommand?,
        lastChunk: RequestStream.LastChunk?, mode: RequestStream.ReplyMode, logger: Logger
    ) async -> Bool {
        var mode = mode
        var lastChunk = lastChunk
        var failures = 0
        // When an attempt first ended with the connection, so without our knowing what it did.
        var ambiguousSince: ContinuousClock.Instant?
        var replyStream = replyStream
        var reply = reply
        while true {
            if let since = ambiguousSince, mode == .lost, ContinuousClock.now - since > RequestStream.lostMarkerLifetime / 2 {
                logger.error("could not learn whether the reply was written before Redis went away; not writing it again")
                return false
            }
            do {
                switch try await stream.reply(
                    to: entryID, on: requests, stream: replyStream, fields: reply.fields, status: reply.status,
                    errorCode: reply.errorCode, backend: reply.backend, deadLetter: deadLetter, lastChunk: lastChunk, mode: mode)
                {
                case .written:
                    logger.debug("replied")
                    if failures > 0 { health.redisSucceeded(groupReady: true) }
                    return true
                case .replied where ambiguousSince != nil:
                    // Our own earlier attempt wrote it; its answer was lost with the connection.
                    logger.debug("replied (the answer to an earlier attempt was lost with its connection)")
                    health.redisSucceeded(groupReady: true)
                    return true
                case .goneFromGroup where mode == .owned:
                    // Deleted from the stream while we ran it, and an XAUTOCLAIM (ours or another
                    // worker's) took it out of the group, unanswered: answer it as a lost entry.
                    // Its marker lets only the first answer through.
                    mode = .lost
                    continue
                case .notOurs, .goneFromGroup, .replied:
                    logger.warning("entry no longer ours (claimed by another consumer, or answered); reply dropped")
                }
                return false
            } catch where !error.isTransient && error.code == .server && lastChunk != nil {
                // Not something waiting helps with, e.g. the chunk stream in another cluster
                // slot: the reply goes without its last chunk and says why.
                logger.error("could not write the reply with its last chunk; writing it without", metadata: ["llmq.error": "\(error)"])
                reply.add("stream_error", "could not write the last chunk to \(lastChunk?.stream ?? ""): \(error.message)")
                lastChunk = nil
            } catch where !error.isTransient && error.code == .server && replyStream != configuration.streams.replies {
                // The producer's reply_to cannot take the reply for a reason the script does not
                // handle itself (another cluster slot): answer on the default stream and say why.
                logger.error("could not write the reply to reply_to; writing it to the default reply stream", metadata: ["llmq.error": "\(error)"])
                reply.add("reply_error", "could not write to reply_to \(replyStream): \(error.message)")
                replyStream = configuration.streams.replies
            } catch {
                failures += 1
                metrics.replyRetries.increment()
                if error.code == .connection {
                    health.redisFailed(error.description)
                    ambiguousSince = ambiguousSince ?? .now
                }
                if Task.isCancelled || (failures > 3 && stopping && error.code == .shutdown) { return false }
                if error.isAuthenticationFailure {
                    // The read loop sees the same refusal and stops the worker; the entry stays
                    // pending for a worker that can write.
                    logger.error("Redis refused the credentials; reply not written, the entry stays pending")
                    return false
                }
                let wait = Backoff.redis.delay(afterFailures: failures, initial: .milliseconds(50))
                if error.isTransient {
                    logger.warning("could not publish reply; retrying", metadata: ["llmq.error": "\(error)"])
                } else {
                    logger.error("could not publish reply (not a transient error); retrying", metadata: ["llmq.error": "\(error)"])
                }
                do {
                    try await Task.sleep(for: wait)
                } catch {
                    return false
                }
            }
        }
    }
}

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
