import Foundation
import LLMQBackends
import LLMQRedis

/// A loaded configuration and where each of its values came from.
public struct LoadedConfiguration: Sendable {
    /// The configuration the worker would run with.
    public let configuration: WorkerConfiguration
    /// The source of each key that was set; the others have their default.
    public let sources: [String: ConfigurationSource]

    /// The effective configuration for `llmq worker --print-config`: one line per key,
    /// `key = value  (source)`, with each served queue's keys after the fixed ones. Secrets
    /// (passwords, API keys, a password inside redis.url) show as `<redacted>`; aliases
    /// (`workerId`, `*.modelLoaded`) appear under the key they stand for. A list of backends
    /// shows each item's keys (`backends[0].weight`) instead of `backend.*`.
    public func printed() -> String {
        var lines: [String] = []
        func line(_ key: String, _ value: String?) {
            // A user and password inside redis.url, and a key read from apiKeyFile, come from there.
            let derivedFrom: String? =
                switch key {
                case "redis.username", "redis.password": "redis.url"
                case _ where key.hasSuffix(".apiKey"): key + "File"
                default: nil
                }
            let source = sources[key] ?? (value == nil ? nil : derivedFrom.flatMap { sources[$0] }) ?? .defaultValue
            lines.append("\(key) = \(value ?? "(none)")  (\(source))")
        }
        func list(_ listKey: String, _ backends: [BackendConfiguration], none: String) {
            guard !backends.isEmpty || sources[listKey] != nil else {
                lines.append("\(listKey) = (none: \(none))  (default)")
                return
            }
            lines.append("\(listKey) = \(backends.count) backend\(backends.count == 1 ? "" : "s")  (\(sources[listKey] ?? .defaultValue))")
            for (index, backend) in backends.enumerated() {
                let prefix = "\(listKey)[\(index)]"
                line("\(prefix).name", backend.name)
                for field in ["type", "endpoint", "model", "description", "apiKey", "apiKeyFile", "connectTimeoutSeconds", "timeoutSeconds"] {
                    line("\(prefix).\(field)", Self.value(of: field, in: backend, fileSet: sources["\(prefix).apiKeyFile"] != nil))
                }
                line("\(prefix).weight", backend.weight.map(Self.number))
                line("\(prefix).slots", backend.slots.map { String($0) })
                line("\(prefix).models", backend.models?.joined(separator: ", "))
            }
        }
        let c = configuration
        for (key, _) in ConfigurationLoader.keys where !key.contains("<") && !Self.aliases.contains(key) && key != "queues" {
            switch key {
            case "backends":
                list(key, c.backends, none: "backend.* is the one backend")
                continue
            case "fallbacks":
                list(key, c.fallbacks, none: c.fallback == nil ? "no fallback" : "fallback.* is the one fallback")
                continue
            case _ where key.hasPrefix("backend.") && !c.backends.isEmpty, _ where key.hasPrefix("fallback.") && !c.fallbacks.isEmpty:
                continue
            default: break
            }
            if key.hasPrefix("fallback."), configuration.fallback == nil {
                line(key, nil)
                continue
            }
            line(key, value(of: key))
        }
        for key in sources.keys.filter({ $0.hasPrefix("polling.") }).sorted() {
            let name = String(key.dropFirst("polling.poll".count))
            lines.append("\(key) = \(configuration.queues.contains { $0.name == name })  (\(sources[key]!))")
        }
        if configuration.queues.isEmpty {
            lines.append("queues = (none: serving the default queue on \(configuration.streams.requests))  (default)")
        }
        for queue in configuration.queues {
            let prefix = "queues.\(queue.name)"
            line("\(prefix).stream", queue.stream)
            line("\(prefix).priority", String(queue.priority))
            line("\(prefix).weight", String(queue.weight))
            line("\(prefix).minShare", Self.number(queue.minimumShare))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static let aliases: Set<String> = ["workerId", "backend.modelLoaded", "fallback.modelLoaded"]

    /// A key's effective value as text; nil when it has none.
    private func value(of key: String) -> String? {
        let c = configuration
        if key.hasPrefix("backend.") || key.hasPrefix("fallback."), let backend = key.hasPrefix("backend.") ? c.backend : c.fallback {
            return Self.value(of: String(key.split(separator: ".").last!), in: backend, fileSet: sources[key] != nil)
        }
        switch key {
        case "redis.url": return Self.redactedURL(c.redis)
        case "redis.username": return c.redis.username
        case "redis.password": return c.redis.password.map { _ in "<redacted>" }
        case "redis.cluster": return String(c.redis.cluster)
        case "redis.nodes": return c.redis.clusterNodes.isEmpty ? nil : c.redis.clusterNodes.map(\.description).joined(separator: ", ")
        case "redis.waitReplicas": return String(c.redis.waitReplicas)
        case "redis.waitTimeoutMs": return String(c.redis.waitTimeout.milliseconds)
        case "consumer": return c.consumer
        case "concurrency": return String(c.concurrency)
        case "streams.requests": return c.streams.requests
        case "streams.group": return c.streams.group
        case "streams.replies": return c.streams.replies
        case "streams.dead": return c.streams.dead
        case "streams.replyMaxLength": return String(c.streams.replyMaxLength)
        case "streams.replyToPrefix": return c.streams.replyToPrefix
        case "streams.deadMaxLength": return String(c.streams.deadMaxLength)
        case "streams.keepAnswered": return String(c.streams.keepAnswered)
        case "streams.answered": return c.streams.answered
        case "streams.answeredMaxLength": return String(c.streams.answeredMaxLength)
        case "streams.answeredMaxAgeSeconds": return String(c.streams.answeredMaxAgeSeconds)
        case "streams.stats": return c.streams.stats
        case "limits.maxRequestBytes": return String(c.limits.maxRequestBytes)
        case "limits.maxTokens": return String(c.limits.maxTokens)
        case "limits.defaultMaxTokens": return String(c.limits.defaultMaxTokens)
        case "retry.maxAttempts": return String(c.retry.maxAttempts)
        case "retry.initialBackoffMs": return Self.milliseconds(c.retry.initialBackoff)
        case "retry.maxBackoffMs": return Self.milliseconds(c.retry.maxBackoff)
        case "breaker.failureThreshold": return String(c.breaker.failureThreshold)
        case "breaker.openSeconds": return Self.seconds(c.breaker.openDuration)
        case "recovery.claimMinIdleMs": return Self.milliseconds(c.recovery.claimMinIdle)
        case "recovery.claimIntervalMs": return Self.milliseconds(c.recovery.claimInterval)
        case "recovery.maxDeliveries": return String(c.recovery.maxDeliveries)
        case "recovery.deleteIdleConsumersAfterSeconds": return c.recovery.deleteIdleConsumersAfter.map(Self.seconds) ?? "0"
        case "shutdownGraceSeconds": return Self.seconds(c.shutdownGrace)
        case "readBlockMs": return Self.milliseconds(c.readBlock)
        case "logLevel": return c.logLevel.rawValue
        case "logFormat": return c.logFormat.rawValue
        case "metrics.port": return String(c.metrics.port ?? 0)
        case "metrics.host": return c.metrics.host
        case "metrics.queueIntervalMs": return Self.milliseconds(c.metrics.queueInterval)
        case "streaming.flushMs": return Self.milliseconds(c.streaming.flushInterval)
        case "streaming.flushTokens": return String(c.streaming.flushTokens)
        case "streaming.expireSeconds": return Self.seconds(c.streaming.expire)
        case "streaming.maxLength": return String(c.streaming.maxLength)
        default: return nil
        }
    }

    /// One of a backend's `backend.*` fields as text, its API key redacted.
    /// - Parameter fileSet: Whether its `apiKeyFile` was set (the path is not kept).
    private static func value(of field: String, in backend: BackendConfiguration, fileSet: Bool) -> String? {
        switch field {
        case "type": backend.kind.rawValue
        case "endpoint": backend.endpoint
        case "model": backend.model
        case "description": backend.description
        case "apiKey": backend.apiKey.map { _ in "<redacted>" }
        case "apiKeyFile": fileSet ? "(set; its content is the apiKey)" : nil
        case "connectTimeoutSeconds": seconds(backend.connectTimeout)
        case "timeoutSeconds": seconds(backend.requestTimeout)
        default: nil
        }
    }

    /// `redis://[user[:<redacted>]@]host:port/db`: the URL the worker connects to, never its password.
    static func redactedURL(_ redis: RedisConfiguration) -> String {
        var credentials = ""
        if redis.username != nil || redis.password != nil {
            credentials = (redis.username ?? "") + (redis.password == nil ? "" : ":<redacted>") + "@"
        }
        return "redis://\(credentials)\(redis.host):\(redis.port)/\(redis.database)"
    }

    private static func seconds(_ duration: Duration) -> String {
        number(Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }

    private static func milliseconds(_ duration: Duration) -> String {
        number((Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18) * 1000)
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
