import Foundation
import LLMQBackends
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
    let backend: ResilientBackend
    let stream: RequestStream
    /// Each queue's parser, by its request stream: in cluster mode a queue in its own slot has
    /// its own `reply_to` prefix and keys (``WorkerConfiguration/Streams/serving(_:)``).
    let parsers: [String: RequestParser]
    let slots: Slots
    let logger: Logger
    let isStopping = NIOLockedValueBox<Bool>(false)
    /// Entries being worked on, refreshed so that no other consumer claims them meanwhile, each
    /// with the handle that stops its work when the entry is no longer ours.
    let inFlight = NIOLockedValueBox<[EntryKey: EntryControl]>([:])
    /// The queues served, highest priority first.
    let queues: [WorkerConfiguration.Queue]
    let metrics: WorkerMetrics
    let health: WorkerHealth
    let lease: ConsumerNameLease?
    /// The pool's slot leases, when the workers share their backends' slots (`slots.pool`).
    let slotLedger: PoolSlotLedger?
    /// Fair intake, when the queues serve their users in turn (`users.fair`).
    let fairIntake: FairIntake?
    /// The user of each entry in flight that a fair queue took for a named user: its running
    /// mark is renewed while it runs and removed when it ends.
    let fairUsers = NIOLockedValueBox<[EntryKey: String]>([:])

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
        let stream = RequestStream(
            redis: configuration.redis, streams: configuration.streams, consumer: configuration.consumer,
            readBlock: configuration.readBlock)
        self.stream = stream
        self.parsers = Self.parsers(for: configuration)
        self.slots = Slots(capacity: configuration.concurrency)
        self.metrics = WorkerMetrics(configuration: configuration, queues: configuration.effectiveQueues)
        self.health = WorkerHealth(configuration: configuration)
        if configuration.slots.pool {
            let ledger = PoolSlotLedger(
                client: stream.writer, prefix: configuration.streams.slots, consumer: configuration.consumer,
                leaseDuration: configuration.slots.leaseDuration)
            backend.shareSlots(through: ledger)
            self.slotLedger = ledger
        } else {
            self.slotLedger = nil
        }
        self.fairIntake = configuration.users.fair
            ? FairIntake(users: configuration.users, markLifetime: configuration.recovery.claimMinIdle) : nil
        var logger = logger
        logger[metadataKey: "llmq.consumer"] = "\(configuration.consumer)"
        self.logger = logger
    }

    /// One parser per queue, by its request stream: in cluster mode a queue in its own slot has
    /// its own `reply_to` prefix and keys. Every queue's own streams are reserved for all.
    static func parsers(for configuration: WorkerConfiguration) -> [String: RequestParser] {
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
        // A pool learns its llama-servers' slots, and so does a single `backend` whose slots
        // the workers share; otherwise its requests are limited by `concurrency` only.
        if !configuration.backends.isEmpty || configuration.slots.pool {
            await backend.discoverSlots(openWhenDown: configuration.backends.count > 1)
        }
        let fatal = NIOLockedValueBox<WorkerError?>(nil)
        try await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.refreshLoop() }
                if let slotLedger {
                    group.addTask { await self.slotLeaseLoop(slotLedger) }
                }
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

    var stopping: Bool { isStopping.withLockedValue { $0 } || Task.isCancelled }

    /// Ollama and OpenAI-compatible servers need a model name; llama-server serves the one it
    /// loaded. With none configured, each request must name its own.
    var backendNeedsModel: Bool {
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
}

extension Backoff {
    /// The read loop's retries while Redis is away: at most 5 s apart.
    static let redisRead = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
    /// A reply's retries: sooner at first, since a finished answer waits on it.
    static let redisReply = Backoff(initial: .milliseconds(50), maximum: .seconds(5))
}
