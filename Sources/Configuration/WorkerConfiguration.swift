import LLMQBackends
import LLMQRedis
import Logging

/// Everything a worker needs, with the defaults a fresh install runs with.
public struct WorkerConfiguration: Sendable {
    /// Stream and group names.
    public struct Streams: Sendable, Hashable {
        /// The request stream producers `XADD` to.
        public var requests = "llmq:requests"
        /// The consumer group all workers share.
        public var group = "llmq"
        /// Where replies go, unless a request names its own `reply_to`.
        public var replies = "llmq:replies"
        /// Entries delivered `maxDeliveries` times without an answer end up here.
        public var dead = "llmq:dead"
        /// Replies are trimmed to about this many entries (`MAXLEN ~`); 0 keeps every reply.
        public var replyMaxLength = 100_000
        /// A request's `reply_to` must start with this, so producers cannot write to arbitrary keys.
        public var replyToPrefix = "llmq:"
        /// Dead letters are trimmed to about this many entries (`MAXLEN ~`); 0 keeps every one.
        public var deadMaxLength = 10_000
        /// By default a request entry is deleted when it is answered, so the request stream holds
        /// only work not yet answered and Redis memory is bounded by what is outstanding. True
        /// copies each answered request to ``answered`` (with its entry ID as `request`) before
        /// deleting it: history, trimmed by ``answeredMaxLength`` and ``answeredMaxAgeSeconds``,
        /// which can never cut off a request that is not answered yet.
        public var keepAnswered = false
        /// The history stream of answered requests (with ``keepAnswered``).
        public var answered = "llmq:answered"
        /// The history stream is trimmed to about this many entries (`MAXLEN ~`); 0 = no length bound.
        public var answeredMaxLength = 100_000
        /// History entries older than this are trimmed (`MINID ~`); 0 = no age bound.
        public var answeredMaxAgeSeconds = 0
        /// A hash of reply counts that workers increment in the same atomic step as each reply:
        /// `replies:ok`, `replies:error` and `error:<code>` (the totals `llmq status` turns into
        /// rates). It counts every reply, wherever its `reply_to` sent it.
        public var stats = "llmq:stats"
        /// The prefix of the pool's slot leases: one sorted set per backend,
        /// `<slots>:<backend name>` (see ``WorkerConfiguration/Slots``).
        public var slots = "llmq:slots"
        /// Redis Cluster mode (`redis.cluster`): a queue whose stream has a hash tag other than
        /// the reply stream's gets reply, dead-letter, history and stats keys of its own, in its
        /// slot (see ``serving(_:)``).
        public var cluster = false
        public init() {}

        /// The defaults in cluster mode: every key hash-tagged `{llmq}`, so that the reply
        /// script's keys share one slot.
        public static var clusterDefaults: Streams {
            var streams = Streams()
            streams.requests = "{llmq}:requests"
            streams.replies = "{llmq}:replies"
            streams.dead = "{llmq}:dead"
            streams.answered = "{llmq}:answered"
            streams.stats = "{llmq}:stats"
            streams.slots = "{llmq}:slots"
            streams.replyToPrefix = "{llmq}:"
            streams.cluster = true
            return streams
        }
    }

    /// Bounds on what a request may ask for.
    public struct Limits: Sendable, Hashable {
        /// A request entry larger than this (all field names and values) is refused.
        public var maxRequestBytes = 1 << 20
        /// The largest `max_tokens` a request may ask for.
        public var maxTokens = 8192
        /// `max_tokens` sent when a request gives none, so no request generates without bound.
        public var defaultMaxTokens = 1024
        public init() {}
    }

    /// Retries of transient backend failures (refused, timeout, 5xx, 503, 429).
    public struct Retry: Sendable, Hashable {
        /// Tries per request and backend, the first included.
        public var maxAttempts = 3
        public var initialBackoff: Duration = .milliseconds(200)
        public var maxBackoff: Duration = .seconds(5)
        public init() {}
    }

    /// The circuit breaker in front of the primary backend.
    public struct Breaker: Sendable, Hashable {
        /// Consecutive failed requests that open the circuit.
        public var failureThreshold = 5
        /// How long the circuit stays open before one request probes the primary again.
        public var openDuration: Duration = .seconds(10)
        public init() {}
    }

    /// Taking over entries from consumers that died.
    public struct Recovery: Sendable, Hashable {
        /// An entry pending this long without its consumer refreshing it is claimed by another.
        public var claimMinIdle: Duration = .seconds(60)
        /// How often a worker looks for such entries.
        public var claimInterval: Duration = .seconds(5)
        /// An entry delivered this many times goes to the dead-letter stream.
        public var maxDeliveries = 5
        /// A consumer with nothing pending and idle this long is removed from the group by the
        /// other workers (scaled-down or killed workers leave their names behind); nil never.
        public var deleteIdleConsumersAfter: Duration? = .seconds(600)
        public init() {}
    }

    /// A named request stream this worker serves. All queues share the consumer group name,
    /// the reply, dead-letter and stats keys, and the worker's `concurrency`.
    public struct Queue: Sendable, Hashable {
        /// The queue's name, as `llmq publish --queue` and the metrics call it.
        public var name: String
        /// Its request stream.
        public var stream: String
        /// Strict priority: while a queue of a higher priority has work, lower ones get no new
        /// slots (beyond their ``minimumShare``).
        public var priority = 0
        /// Share of the slots among queues of the same priority (3 and 1: three starts to one).
        public var weight = 1
        /// The fraction of starts this queue gets whenever it has work, whatever the priorities
        /// (0...1): what keeps a low queue from starving under constant higher load.
        public var minimumShare = 0.0

        public init(name: String, stream: String, priority: Int = 0, weight: Int = 1, minimumShare: Double = 0) {
            self.name = name
            self.stream = stream
            self.priority = priority
            self.weight = weight
            self.minimumShare = minimumShare
        }
    }

    /// The HTTP listener for `/metrics`, `/healthz` and `/readyz`.
    public struct Metrics: Sendable, Hashable {
        /// The port; nil (the default) serves no listener.
        public var port: Int?
        /// The address to bind. Loopback by default; the container image sets 0.0.0.0.
        public var host = "127.0.0.1"
        /// How often each worker reads the queue gauges (length, lag, pending) from Redis.
        public var queueInterval: Duration = .seconds(5)
        public init() {}
    }

    /// Streamed answers (requests with `stream`): how their chunks are written.
    public struct Streaming: Sendable, Hashable {
        /// After the first piece of an answer, which is written at once, text is written at most
        /// this often per request: one `XADD` carries every piece received meanwhile.
        public var flushInterval: Duration = .milliseconds(10)
        /// Text is written sooner once this many pieces wait.
        public var flushTokens = 16
        /// A chunk stream expires this long after its last write, so abandoned ones vanish.
        public var expire: Duration = .seconds(300)
        /// Chunk streams are trimmed to about this many entries (`MAXLEN ~`); 0 = no bound. Only
        /// a `stream_to` shared by many requests comes near it.
        public var maxLength = 10_000
        public init() {}
    }

    /// Backend slots shared by every worker of the pool.
    public struct Slots: Sendable, Hashable {
        /// True: a backend's slots (configured, or llama-server's `total_slots`) belong to the
        /// pool, and a worker holds a lease in Redis for each request it sends; workers sharing
        /// one configuration never send a backend more than its slots together. False: each
        /// worker counts the slots alone, as if it were the only one.
        public var pool = true
        /// A lease its worker stops renewing (crashed, stalled) expires after this; renewed
        /// every third of it.
        public var leaseDuration: Duration = .seconds(5)
        public init() {}
    }

    /// Fair intake: the users of a queue are served in turn, pool-wide (see `FairIntake`).
    public struct Users: Sendable, Hashable {
        /// True: each queue's new entries wait in Redis by their `user` field and are taken user
        /// by user in turn, by every worker alike; false: in the order they arrived.
        public var fair = false
        /// The most requests of one user in flight at once in the pool; 0 = no limit.
        public var maxInFlight = 0
        /// Requests one user may start per minute in the pool (a token bucket of this size,
        /// refilled evenly); 0 = no limit.
        public var requestsPerMinute = 0
        public init() {}
    }

    /// Conversation affinity: a conversation's next turns go to the backend holding its prefix.
    public struct Affinity: Sendable, Hashable {
        /// True: a request with a `session`, or one continuing a conversation (its messages hold
        /// an assistant turn), goes to its conversation's backend when that one has a slot free.
        public var enabled = true
        /// When the conversation's backend is full, how long a request may wait for one of its
        /// slots before it goes elsewhere, where its prefix is computed again.
        public var maxWait: Duration = .milliseconds(500)
        public init() {}
    }

    /// How log lines are written on stderr.
    public enum LogFormat: String, Sendable, Hashable, CaseIterable {
        /// `timestamp level label: metadata message`, for people.
        case text
        /// One JSON object per line, for Loki, Elasticsearch and other collectors.
        case json
    }

    public var redis = RedisConfiguration()
    /// This worker's consumer name; unique per process (default: hostname-pid).
    public var consumer: String
    /// Requests in flight at once in this process.
    public var concurrency = 4
    public var streams = Streams()
    /// The queues served, highest priority first; none means the one queue `default` on
    /// `streams.requests` (see ``effectiveQueues``).
    public var queues: [Queue] = []
    /// The queues this worker serves: ``queues``, or the default queue.
    public var effectiveQueues: [Queue] {
        queues.isEmpty ? [Queue(name: "default", stream: streams.requests)] : queues
    }

    /// The queue called `name`: a configured one, else `default` on `streams.requests`, else
    /// by the naming rule `<streams.requests>:<name>` (`llmq:requests:HumanAI`).
    public func queue(named name: String) -> Queue {
        if let queue = effectiveQueues.first(where: { $0.name == name }) { return queue }
        if name == "default" { return Queue(name: name, stream: streams.requests) }
        return Queue(name: name, stream: streams.requests + ":" + name)
    }

    /// A streamed request's own chunk stream: `<replyToPrefix>stream:<entry ID>`, with the
    /// queue's name before the ID when queues are configured (entry IDs are unique per stream
    /// only): `llmq:stream:1700000000000-0`, `llmq:stream:HumanAI:1700000000000-0`. In cluster
    /// mode the prefix is the queue's (``Streams/serving(_:)``), so the chunk stream shares the
    /// request stream's slot: `{llmq}:stream:1700000000000-0`.
    public func chunkStream(queue: String, entryID: String) -> String {
        let prefix = streams.serving(self.queue(named: queue).stream).replyToPrefix
        return prefix + "stream:" + (queues.isEmpty ? "" : queue + ":") + entryID
    }

    public var backend: BackendConfiguration
    /// Takes over while the primary backend fails; optional.
    public var fallback: BackendConfiguration?
    /// Several backends sharing the traffic (`backends: [...]`); when empty, ``backend`` alone.
    /// Weights, models and slots decide which one serves a request (see `BackendPool`).
    public var backends: [BackendConfiguration] = []
    /// Backends used only while every one of ``backends`` is unavailable (`fallbacks: [...]`);
    /// when empty, ``fallback``.
    public var fallbacks: [BackendConfiguration] = []
    public var limits = Limits()
    public var retry = Retry()

    /// The names the backends go by in replies, metrics and the pool's slot leases: each of
    /// ``backends`` (named when read), else the one ``backend``; then the fallbacks the same way
    /// (``BackendConfiguration/resolvedName``).
    public var backendNames: [String] {
        let primaries = backends.isEmpty ? [backend.resolvedName] : backends.map(\.resolvedName)
        let spares = fallbacks.isEmpty ? (fallback.map { [$0.resolvedName] } ?? []) : fallbacks.map(\.resolvedName)
        return primaries + spares.filter { !primaries.contains($0) }
    }
    public var breaker = Breaker()
    public var recovery = Recovery()
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    public var shutdownGrace: Duration = .seconds(30)
    /// How long one `XREADGROUP` waits for new entries.
    public var readBlock: Duration = .seconds(2)
    public var logLevel: Logger.Level = .info
    public var logFormat: LogFormat = .text
    public var metrics = Metrics()
    public var streaming = Streaming()
    public var slots = Slots()
    public var users = Users()
    public var affinity = Affinity()

    public init(
        consumer: String,
        backend: BackendConfiguration = BackendConfiguration(kind: .llamaCpp, endpoint: BackendConfiguration.Kind.llamaCpp.defaultEndpoint!)
    ) {
        self.consumer = consumer
        self.backend = backend
    }
}
