import Logging

extension ConfigurationKey {
    /// Every key, in the order `--print-config` and the README's table list them. Each key is
    /// here once; its default is ``WorkerConfiguration``'s, unless said otherwise here.
    public static let all: [ConfigurationKey] =
        redis + worker + streams + queues + backendLists + backend
        + backend.map { $0.renamed(from: "backend", to: "fallback", help: "") }.withFirstHelp(
            "backend used while the primary fails (same keys as backend.*); no fallback unless fallback.type is set")
        + slots + users + affinity + limits + retry + breaker + recovery + process + metrics + streaming

    static let redis: [ConfigurationKey] = [
        .init("redis.url", .name, "redis://[user:password@]host:port[/db]", flag: "--redis-url", show: { c in LoadedConfiguration.redactedURL(c.redis) }),
        .init("redis.username", .text, "ACL user, overrides the URL's", default: "the URL's", show: { c in c.redis.username }),
        .init("redis.password", .text, "password, overrides the URL's", secret: true, default: "the URL's", show: { c in c.redis.password.map { _ in "<redacted>" } }),
        .init(
            "redis.cluster", .bool,
            "true: Redis Cluster mode, the URL's node (and redis.nodes) only seed the slot map; keys default to {llmq}:... (see [docs/CLUSTER.md](docs/CLUSTER.md))", show: { c in String(c.redis.cluster) }),
        .init("redis.nodes", .list, "more cluster nodes to discover the slot map from, as host:port (environment: LLMQ_REDIS_NODES=h1:p1,h2:p2)", show: { c in c.redis.clusterNodes.isEmpty ? nil : c.redis.clusterNodes.map(\.description).joined(separator: ", ") }),
        .init("redis.waitReplicas", .whole(0...100), "after each reply, WAIT until this many replicas have it, 0 = do not wait", show: { c in String(c.redis.waitReplicas) }),
        .init("redis.waitTimeoutMs", .duration(0.001...600_000, unit: 0.001), "how long that WAIT may take", show: { c in String(c.redis.waitTimeout.milliseconds) }),
    ]

    static let worker: [ConfigurationKey] = [
        .init(
            "consumer", .name, "this worker's consumer name (under Docker the hostname is the container ID); a configured name is leased",
            flag: "--consumer", default: "hostname-pid", show: { c in c.consumer }),
        .init("workerId", .name, "the consumer name, as older config files call it (alias of consumer)", alias: "consumer"),
        .init("concurrency", .whole(1...4096), "requests in flight at once in this process", flag: "--concurrency", show: { c in String(c.concurrency) }),
    ]

    static let streams: [ConfigurationKey] = [
        .init("streams.requests", .name, "request stream", flag: "--request-stream", show: { c in c.streams.requests }),
        .init("streams.group", .name, "consumer group", flag: "--group", show: { c in c.streams.group }),
        .init("streams.replies", .name, "reply stream", flag: "--replies", show: { c in c.streams.replies }),
        .init("streams.dead", .name, "dead-letter stream", show: { c in c.streams.dead }),
        .init("streams.replyMaxLength", .whole(0...Int(Int32.max)), "approximate cap on reply stream length, 0 = none", show: { c in String(c.streams.replyMaxLength) }),
        .init("streams.replyToPrefix", .text, "required prefix of a request's reply_to", show: { c in c.streams.replyToPrefix }),
        .init("streams.deadMaxLength", .whole(0...Int(Int32.max)), "approximate cap on dead-letter stream length, 0 = none", show: { c in String(c.streams.deadMaxLength) }),
        .init("streams.keepAnswered", .bool, "copy answered requests to streams.answered before deleting them", show: { c in String(c.streams.keepAnswered) }),
        .init("streams.answered", .name, "history stream of answered requests", show: { c in c.streams.answered }),
        .init("streams.answeredMaxLength", .whole(0...Int(Int32.max)), "approximate cap on the history stream's length, 0 = none", show: { c in String(c.streams.answeredMaxLength) }),
        .init("streams.answeredMaxAgeSeconds", .whole(0...(100 * 365 * 86_400)), "trim history entries older than this, 0 = none", show: { c in String(c.streams.answeredMaxAgeSeconds) }),
        .init("streams.stats", .name, "hash of reply counts by status and error code, kept by the reply script, read by llmq status", show: { c in c.streams.stats }),
        .init("streams.slots", .name, "prefix of the pool's slot leases, a sorted set per backend: <streams.slots>:<backend name>", show: { c in c.streams.slots }),
    ]

    static let queues: [ConfigurationKey] = {
        let queue = WorkerConfiguration.Queue(name: "", stream: "")
        return [
            .init(
                "queues", .structured, "environment only (LLMQ_QUEUES=a,b): more queues to serve, with the `queues.<Queue>.*` defaults; a queue's keys in the environment are `LLMQ_QUEUES_<QUEUE>_PRIORITY` etc.",
                default: "(none: the default queue on streams.requests)"),
            .init(
                "queues.<Queue>.stream", .name, "the queue's request stream (e.g. llmq:requests:HumanAI)", default: "streams.requests:<Queue>"),
            .init(
                "queues.<Queue>.priority", .whole(-1_000_000...1_000_000), "whole number; higher queues get free slots first",
                default: String(queue.priority)),
            .init(
                "queues.<Queue>.weight", .whole(1...1_000_000), "share of slots among queues of one priority, 1 or more",
                default: String(queue.weight)),
            .init(
                "queues.<Queue>.minShare", .number(0...1), "fraction of starts the queue gets whenever it has work, 0...1",
                default: LoadedConfiguration.number(queue.minimumShare)),
            .init(
                "polling.poll<Queue>", .bool, "true serves the queue `<Queue>` (`polling.pollHumanAI`: HumanAI on llmq:requests:HumanAI), false does not, even if it is in queues",
                default: "(none)"),
        ]
    }()

    static let backendLists: [ConfigurationKey] = [
        .init(
            "backends", .structured,
            "backends sharing the traffic: a list of objects with the backend.* keys and name, weight, slots, models; environment: LLMQ_BACKENDS as a JSON array; not with backend.* (see \"Several backends\")",
            default: "(none: backend.* is the one backend)"),
        .init("backends[<N>].name", .name, "name in replies, status and metrics", default: "its type, then type-2, type-3..."),
        .init(
            "backends[<N>].weight", .numberAtLeast(0), "share of requests among backends serving a model, 0 = out of rotation",
            default: "its slots"),
        .init("backends[<N>].slots", .whole(1...4096), "requests it serves at once", default: "llama-server's total_slots, else 1"),
        .init("backends[<N>].models", .list, "models it serves, a list or one name; its model is added", default: "any"),
        .init(
            "fallbacks", .structured,
            "backends used only while every backend is unavailable, items as in backends; environment: LLMQ_FALLBACKS as a JSON array; [] = none; not with fallback.*",
            default: "(none)"),
    ]

    /// The keys of one backend; `fallback.*` has the same.
    static let backend: [ConfigurationKey] = [
        .init("backend.type", .choice(BackendKind.names), "the backend's API", flag: "--backend"),
        .init(
            "backend.endpoint", .name, "base URL or full API path", flag: "--endpoint",
            default: BackendKind.defaultEndpoints),
        .init(
            "backend.model", .name, "model asked for when a request names none; with none, llama-server serves the model it loaded, and for ollama and openai each request must name its model", flag: "--model"),
        .init("backend.modelLoaded", .name, "alias of backend.model, as older config files call it", alias: "backend.model"),
        .init("backend.description", .text, "free text for people, shown in the startup log"),
        .init("backend.apiKey", .text, "bearer token, sent as Authorization: Bearer, never logged; prefer backend.apiKeyFile or the environment", secret: true),
        .init("backend.apiKeyFile", .name, "file holding the bearer token"),
        .init("backend.connectTimeoutSeconds", .duration(0.001...3600, unit: 1), "connect timeout"),
        .init("backend.timeoutSeconds", .duration(0.001...86_400, unit: 1), "whole-request timeout"),
    ]

    static let slots: [ConfigurationKey] = [
        .init(
            "slots.pool", .bool,
            "true: a backend's slots are shared by every worker (a lease in Redis per request), so any number of workers with one configuration never over-admit; false: each worker counts them alone",
            show: { c in String(c.slots.pool) }),
        .init(
            "slots.leaseMs", .duration(100...600_000, unit: 0.001),
            "a slot lease its worker stops renewing (crashed, stalled) expires after this", show: { c in LoadedConfiguration.milliseconds(c.slots.leaseDuration) }),
    ]

    static let users: [ConfigurationKey] = [
        .init(
            "users.fair", .bool,
            "true: within each queue, requests are taken user by user in turn (the request's `user` field), pool-wide; false: in arrival order",
            show: { c in String(c.users.fair) }),
        .init(
            "users.maxInFlight", .whole(0...1_000_000), "most requests of one user in flight at once across the pool, 0 = no limit (needs users.fair)",
            show: { c in String(c.users.maxInFlight) }),
        .init(
            "users.requestsPerMinute", .whole(0...1_000_000_000), "requests one user may start per minute across the pool (a bucket of that many, refilled evenly), 0 = no limit (needs users.fair)",
            show: { c in String(c.users.requestsPerMinute) }),
    ]

    static let affinity: [ConfigurationKey] = [
        .init(
            "affinity.enabled", .bool,
            "true: a request with a `session`, or continuing a conversation, goes to the backend holding its prefix when that one has a slot free (rendezvous hashing over the backends, by weight)",
            show: { c in String(c.affinity.enabled) }),
        .init(
            "affinity.maxWaitMs", .duration(0...600_000, unit: 0.001),
            "when a conversation's backend is full, how long its next turn may wait for a slot there before going elsewhere (and computing its prefix again)",
            show: { c in LoadedConfiguration.milliseconds(c.affinity.maxWait) }),
    ]

    static let limits: [ConfigurationKey] = [
        .init("limits.maxRequestBytes", .whole(1024...(512 << 20)), "largest request entry accepted", show: { c in String(c.limits.maxRequestBytes) }),
        .init("limits.maxTokens", .whole(1...1_000_000), "largest max_tokens accepted", show: { c in String(c.limits.maxTokens) }),
        .init("limits.defaultMaxTokens", .whole(1...1_000_000), "max_tokens when a request gives none", show: { c in String(c.limits.defaultMaxTokens) }),
    ]

    static let retry: [ConfigurationKey] = [
        .init("retry.maxAttempts", .whole(1...100), "tries per backend for transient failures", show: { c in String(c.retry.maxAttempts) }),
        .init("retry.initialBackoffMs", .duration(0...600_000, unit: 0.001), "first backoff, doubled each retry, with jitter", show: { c in LoadedConfiguration.milliseconds(c.retry.initialBackoff) }),
        .init("retry.maxBackoffMs", .duration(0...3_600_000, unit: 0.001), "longest backoff", show: { c in LoadedConfiguration.milliseconds(c.retry.maxBackoff) }),
    ]

    static let breaker: [ConfigurationKey] = [
        .init("breaker.failureThreshold", .whole(1...10_000), "consecutive failures that open the circuit", show: { c in String(c.breaker.failureThreshold) }),
        .init("breaker.openSeconds", .duration(0.001...86_400, unit: 1), "time the circuit stays open before a probe", show: { c in LoadedConfiguration.seconds(c.breaker.openDuration) }),
    ]

    static let recovery: [ConfigurationKey] = [
        .init(
            "recovery.claimMinIdleMs", .duration(100...86_400_000, unit: 0.001),
            "idle time after which another worker takes over an entry", show: { c in LoadedConfiguration.milliseconds(c.recovery.claimMinIdle) }),
        .init("recovery.claimIntervalMs", .duration(10...3_600_000, unit: 0.001), "how often to look for such entries", show: { c in LoadedConfiguration.milliseconds(c.recovery.claimInterval) }),
        .init("recovery.maxDeliveries", .whole(1...1000), "deliveries before an entry is dead-lettered", show: { c in String(c.recovery.maxDeliveries) }),
        .init(
            "recovery.deleteIdleConsumersAfterSeconds", .duration(0...(365 * 86_400), unit: 1),
            "remove consumers idle this long with nothing pending, 0 = never", show: { c in c.recovery.deleteIdleConsumersAfter.map(LoadedConfiguration.seconds) ?? "0" }),
    ]

    static let process: [ConfigurationKey] = [
        .init("shutdownGraceSeconds", .duration(0...86_400, unit: 1), "time in-flight requests get to finish on SIGTERM", show: { c in LoadedConfiguration.seconds(c.shutdownGrace) }),
        .init("readBlockMs", .duration(1...60_000, unit: 0.001), "XREADGROUP BLOCK time", show: { c in LoadedConfiguration.milliseconds(c.readBlock) }),
        .init(
            "logLevel", .choice(Logger.Level.allCases.map(\.rawValue)), "how much is logged (prompt text never is)", flag: "--log-level", show: { c in c.logLevel.rawValue }),
        .init(
            "logFormat", .choice(WorkerConfiguration.LogFormat.allCases.map(\.rawValue)), "text, or json: one JSON object per line",
            flag: "--log-format", show: { c in c.logFormat.rawValue }),
    ]

    static let metrics: [ConfigurationKey] = [
        .init(
            "metrics.port", .whole(0...65535), "port for /metrics, /healthz and /readyz, 0 = no listener (the image uses 9464)",
            flag: "--metrics-port", show: { c in String(c.metrics.port ?? 0) }),
        .init(
            "metrics.host", .name, "address the metrics listener binds (the image uses 0.0.0.0)", flag: "--metrics-host", show: { c in c.metrics.host }),
        .init(
            "metrics.queueIntervalMs", .duration(100...3_600_000, unit: 0.001),
            "how often each worker reads the queue gauges from Redis", show: { c in LoadedConfiguration.milliseconds(c.metrics.queueInterval) }),
    ]

    static let streaming: [ConfigurationKey] = [
        .init(
            "streaming.flushMs", .duration(0...10_000, unit: 0.001),
            "a streamed answer's text is written at most this often per request, the first piece at once", show: { c in LoadedConfiguration.milliseconds(c.streaming.flushInterval) }),
        .init("streaming.flushTokens", .whole(1...100_000), "or as soon as this many pieces wait", show: { c in String(c.streaming.flushTokens) }),
        .init("streaming.expireSeconds", .duration(1...(30 * 86_400), unit: 1), "a chunk stream expires this long after its last write", show: { c in LoadedConfiguration.seconds(c.streaming.expire) }),
        .init(
            "streaming.maxLength", .whole(0...100_000_000), "approximate cap on a chunk stream's length (MAXLEN ~), 0 = none", show: { c in String(c.streaming.maxLength) }),
    ]
}

extension [ConfigurationKey] {
    /// These keys, the first with `help` (the `fallback.*` keys say what they are once).
    fileprivate func withFirstHelp(_ help: String) -> [ConfigurationKey] {
        guard let first else { return self }
        return [first.renamed(from: first.name, to: first.name, help: help)] + dropFirst()
    }
}
