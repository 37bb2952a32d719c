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
        if let value = try root.whole("concurrency") { concurrency = value }
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
        if let value = try root.duration("shutdownGraceSeconds") { shutdownGrace = value }
        if let value = try root.duration("readBlockMs") { readBlock = value }
        if let value = try root.choice("logLevel", Logger.Level.init(rawValue:)) { logLevel = value }
        if let value = try root.choice("logFormat", LogFormat.init(rawValue:)) { logFormat = value }
        metrics = try Metrics(reading: root.scoped(to: "metrics"))
        streaming = try Streaming(reading: root.scoped(to: "streaming"))
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
        if let value = try redis.text("username") { username = value }
        if let value = try redis.text("password") { password = value }
        if let value = try redis.bool("cluster") { cluster = value }
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
        if let value = try redis.whole("waitReplicas") { waitReplicas = value }
        if let value = try redis.duration("waitTimeoutMs") { waitTimeout = value }
    }
}

extension WorkerConfiguration.Streams {
    /// `streams.*`, over the defaults of cluster mode when `cluster`; the streams must differ.
    init(reading streams: ConfigurationScope, cluster: Bool) throws(ConfigurationError) {
        self = cluster ? .clusterDefaults : .init()
        if let value = try streams.name("requests") { requests = value }
        if let value = try streams.name("group") { group = value }
        if let value = try streams.name("replies") { replies = value }
        if let value = try streams.name("dead") { dead = value }
        if let value = try streams.whole("replyMaxLength") { replyMaxLength = value }
        if let value = try streams.text("replyToPrefix") { replyToPrefix = value }
        if let value = try streams.whole("deadMaxLength") { deadMaxLength = value }
        if let value = try streams.bool("keepAnswered") { keepAnswered = value }
        if let value = try streams.name("answered") { answered = value }
        if let value = try streams.whole("answeredMaxLength") { answeredMaxLength = value }
        if let value = try streams.whole("answeredMaxAgeSeconds") { answeredMaxAgeSeconds = value }
        if let value = try streams.name("stats") { stats = value }
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
        if dead == requests {
            throw streams.error(streams.source("dead") != nil ? "dead" : "requests", "the dead-letter stream must differ from the request stream")
        }
    }
}

extension WorkerConfiguration.Limits {
    /// `limits.*`; the default `max_tokens` may not exceed the largest.
    init(reading limits: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        if let value = try limits.whole("maxRequestBytes") { maxRequestBytes = value }
        if let value = try limits.whole("maxTokens") { maxTokens = value }
        if let value = try limits.whole("defaultMaxTokens") { defaultMaxTokens = value }
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
        if let value = try retry.whole("maxAttempts") { maxAttempts = value }
        if let value = try retry.duration("initialBackoffMs") { initialBackoff = value }
        if let value = try retry.duration("maxBackoffMs") { maxBackoff = value }
    }
}

extension WorkerConfiguration.Breaker {
    /// `breaker.*`.
    init(reading breaker: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        if let value = try breaker.whole("failureThreshold") { failureThreshold = value }
        if let value = try breaker.duration("openSeconds") { openDuration = value }
    }
}

extension WorkerConfiguration.Recovery {
    /// `recovery.*`; 0 seconds for idle consumers means never.
    init(reading recovery: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        if let value = try recovery.duration("claimMinIdleMs") { claimMinIdle = value }
        if let value = try recovery.duration("claimIntervalMs") { claimInterval = value }
        if let value = try recovery.whole("maxDeliveries") { maxDeliveries = value }
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
        if let value = try metrics.name("host") { host = value }
        if let value = try metrics.duration("queueIntervalMs") { queueInterval = value }
    }
}

extension WorkerConfiguration.Streaming {
    /// `streaming.*`.
    init(reading streaming: ConfigurationScope) throws(ConfigurationError) {
        self.init()
        if let value = try streaming.duration("flushMs") { flushInterval = value }
        if let value = try streaming.whole("flushTokens") { flushTokens = value }
        if let value = try streaming.duration("expireSeconds") { expire = value }
        if let value = try streaming.whole("maxLength") { maxLength = value }
    }
}
