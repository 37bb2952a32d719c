import LLMQBackends
import LLMQRedis
import Logging

// Each section of the configuration reads its own keys over a scoped reader, in the manner of
// AsyncHTTPClient's `HTTPClientConfiguration+SwiftConfiguration.swift`. The keys' ranges,
// choices and help are in `ConfigurationKey.all`; the defaults are the structs' own.

extension WorkerConfiguration {
    /// Reads the whole configuration, section by section, then the checks across sections.
    /// - Parameters:
    ///   - reading: The layers to read from.
    ///   - defaultConsumer: The consumer name when none is configured.
    ///   - file: The config file, for the queues it names.
    ///   - lists: `backends` and `fallbacks`, when given.
    init(
        reading: ConfigurationReading, defaultConsumer: String, file: ConfigFile?, lists: [String: BackendList]
    ) throws(ConfigurationError) {
        let backends = try BackendSet(reading: reading, lists: lists)
        self.init(consumer: try reading.aliased("consumer", "workerId") ?? defaultConsumer, backend: backends.backend)
        self.backends = backends.backends
        self.fallbacks = backends.fallbacks
        self.fallback = try backends.fallback(reading: reading)
        let root = reading.root
        redis = try RedisConfiguration(reading: root.scoped(to: "redis"))
        try root.update(&concurrency, "concurrency")
        // In cluster mode the keys default to one hash tag, so that the reply script's keys share a slot.
        streams = try Streams(reading: root.scoped(to: "streams"), cluster: redis.cluster)
        queues = try Queue.served(reading: reading, streams: streams, file: file)
        if streams.cluster {
            for queue in effectiveQueues {
                if let problem = streams.serving(queue.stream).clusterProblem() {
                    throw reading.error(problem.key ?? (queues.isEmpty ? "streams.requests" : "queues.\(queue.name).stream"), problem.problem)
                }
            }
        }
        limits = try Limits(reading: root.scoped(to: "limits"))
        retry = try Retry(reading: root.scoped(to: "retry"))
        breaker = try Breaker(reading: root.scoped(to: "breaker"))
        recovery = try Recovery(reading: root.scoped(to: "recovery"))
        try root.update(&shutdownGrace, "shutdownGraceSeconds")
        try root.update(&readBlock, "readBlockMs")
        if let value = try root.choice("logLevel", Logger.Level.init(rawValue:)) { logLevel = value }
        if let value = try root.choice("logFormat", LogFormat.init(rawValue:)) { logFormat = value }
        metrics = try Metrics(reading: root.scoped(to: "metrics"))
        streaming = try Streaming(reading: root.scoped(to: "streaming"))
        slots = try Slots(reading: root.scoped(to: "slots"))
        users = try Users(reading: root.scoped(to: "users"))
        try root.scoped(to: "affinity").update(&affinity.enabled, "enabled")
        try root.scoped(to: "affinity").update(&affinity.maxWait, "maxWaitMs")
        if users.fair && consumer == Users.stagingConsumer {
            throw reading.error("consumer", "\"\(consumer)\" is the name fair intake keeps its waiting entries under; choose another")
        }
    }
}

extension RedisConfiguration {
    /// `redis.*`: the URL, the credentials over it, cluster mode and WAIT.
    init(reading redis: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        if let url = try redis.name("url") {
            do {
                self = try RedisConfiguration(url: url)
            } catch {
                throw redis.error("url", error.reason)
            }
        }
        try redis.update(&username, "username")
        try redis.update(&password, "password")
        try redis.update(&cluster, "cluster")
        for node in try redis.list("nodes") ?? [] where !node.isEmpty {
            guard let parsed = RedisNode(node) else { throw redis.error("nodes", "\"\(node)\" is not host:port") }
            clusterNodes.append(parsed)
        }
        if cluster && database != 0 {
            throw redis.error("url", "a Redis Cluster has only database 0; drop /\(database) from the URL")
        }
        if !clusterNodes.isEmpty && !cluster {
            throw redis.error("nodes", "redis.nodes lists cluster nodes, but redis.cluster is not true")
        }
        try redis.update(&waitReplicas, "waitReplicas")
        try redis.update(&waitTimeout, "waitTimeoutMs")
    }
}

extension WorkerConfiguration.Streams {
    /// `streams.*`, over the defaults of cluster mode when `cluster`; the streams must differ.
    init(reading streams: ConfigurationScope, cluster: Bool) throws(ConfigurationError) {
        self = cluster ? .clusterDefaults : .init()
        try streams.update(&requests, "requests")
        try streams.update(&group, "group")
        try streams.update(&replies, "replies")
        try streams.update(&dead, "dead")
        try streams.update(&replyMaxLength, "replyMaxLength")
        try streams.update(&replyToPrefix, "replyToPrefix")
        try streams.update(&deadMaxLength, "deadMaxLength")
        try streams.update(&keepAnswered, "keepAnswered")
        try streams.update(&answered, "answered")
        try streams.update(&answeredMaxLength, "answeredMaxLength")
        try streams.update(&answeredMaxAgeSeconds, "answeredMaxAgeSeconds")
        try streams.update(&stats, "stats")
        try streams.update(&slots, "slots")
        try check(streams)
    }

    /// The request, reply, dead-letter, history and stats keys must be apart.
    private func check(_ streams: ConfigurationScope) throws(ConfigurationError) {
        if replies == requests {
            throw streams.error(streams.source("replies") != nil ? "replies" : "requests", "the reply stream must differ from the request stream")
        }
        if keepAnswered && [requests, replies, dead].contains(answered) {
            throw streams.error("answered", "the history stream must differ from the request, reply and dead-letter streams")
        }
        if [requests, replies, dead].contains(stats) {
            throw streams.error("stats", "the stats hash must differ from the request, reply and dead-letter streams")
        }
        if cluster && HashSlot.tag(of: slots) == nil {
            throw streams.error("slots", "in cluster mode the slot leases' prefix needs a hash tag, e.g. {llmq}:slots (\(slots) has none), so that every backend's leases share one slot")
        }
        if dead == requests {
            throw streams.error(streams.source("dead") != nil ? "dead" : "requests", "the dead-letter stream must differ from the request stream")
        }
    }
}

extension WorkerConfiguration.Limits {
    /// `limits.*`; the default `max_tokens` may not exceed the largest.
    init(reading limits: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        try limits.update(&maxRequestBytes, "maxRequestBytes")
        try limits.update(&maxTokens, "maxTokens")
        try limits.update(&defaultMaxTokens, "defaultMaxTokens")
        if defaultMaxTokens > maxTokens {
            throw limits.error(
                limits.source("defaultMaxTokens") != nil ? "defaultMaxTokens" : "maxTokens",
                "limits.defaultMaxTokens (\(defaultMaxTokens)) exceeds limits.maxTokens (\(maxTokens))")
        }
    }
}

extension WorkerConfiguration.Retry {
    /// `retry.*`.
    init(reading retry: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        try retry.update(&maxAttempts, "maxAttempts")
        try retry.update(&initialBackoff, "initialBackoffMs")
        try retry.update(&maxBackoff, "maxBackoffMs")
    }
}

extension WorkerConfiguration.Breaker {
    /// `breaker.*`.
    init(reading breaker: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        try breaker.update(&failureThreshold, "failureThreshold")
        try breaker.update(&openDuration, "openSeconds")
    }
}

extension WorkerConfiguration.Recovery {
    /// `recovery.*`; 0 seconds for idle consumers means never.
    init(reading recovery: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        try recovery.update(&claimMinIdle, "claimMinIdleMs")
        try recovery.update(&claimInterval, "claimIntervalMs")
        try recovery.update(&maxDeliveries, "maxDeliveries")
        if let value = try recovery.duration("deleteIdleConsumersAfterSeconds") {
            deleteIdleConsumersAfter = value == .zero ? nil : value
        }
    }
}

extension WorkerConfiguration.Metrics {
    /// `metrics.*`; port 0 means no listener.
    init(reading metrics: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        if let value = try metrics.whole("port") { port = value == 0 ? nil : value }
        try metrics.update(&host, "host")
        try metrics.update(&queueInterval, "queueIntervalMs")
    }
}

extension WorkerConfiguration.Streaming {
    /// `streaming.*`.
    init(reading streaming: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        try streaming.update(&flushInterval, "flushMs")
        try streaming.update(&flushTokens, "flushTokens")
        try streaming.update(&expire, "expireSeconds")
        try streaming.update(&maxLength, "maxLength")
    }
}

extension WorkerConfiguration.Users {
    /// The consumer under which a fair queue's entries wait in the group until a worker takes
    /// them; no worker may go by it.
    public static let stagingConsumer = "llmq:fair"

    /// `users.*`; the limits need `users.fair`.
    init(reading users: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        try users.update(&fair, "fair")
        try users.update(&maxInFlight, "maxInFlight")
        try users.update(&requestsPerMinute, "requestsPerMinute")
        if !fair {
            if maxInFlight > 0 { throw users.error("maxInFlight", "a per-user limit needs users.fair: true") }
            if requestsPerMinute > 0 { throw users.error("requestsPerMinute", "a per-user limit needs users.fair: true") }
        }
    }
}

extension WorkerConfiguration.Slots {
    /// `slots.*`.
    init(reading slots: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        try slots.update(&pool, "pool")
        try slots.update(&leaseDuration, "leaseMs")
    }
}
