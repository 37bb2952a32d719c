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
                for field in ConfigurationKey.backend.filter({ $0.aliasOf == nil }).map({ String($0.name.dropFirst("backend.".count)) }) {
                    line("\(prefix).\(field)", Self.value(of: field, in: backend, fileSet: sources["\(prefix).apiKeyFile"] != nil))
                }
                line("\(prefix).weight", backend.weight.map(Self.number))
                line("\(prefix).slots", backend.slots.map { String($0) })
                line("\(prefix).models", backend.models?.joined(separator: ", "))
            }
        }
        let c = configuration
        for key in ConfigurationKey.all.map(\.name) where !key.contains("<") && !ConfigurationKey.aliases.contains(key) && key != "queues" {
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

    /// A configuration with every default, for the defaults the registry shows.
    static let defaults = LoadedConfiguration(configuration: WorkerConfiguration(consumer: ""), sources: [:])

    /// A key's effective value as text; nil when it has none.
    func value(of key: String) -> String? {
        let c = configuration
        if key.hasPrefix("backend.") || key.hasPrefix("fallback."), let backend = key.hasPrefix("backend.") ? c.backend : c.fallback {
            return Self.value(of: String(key.split(separator: ".").last!), in: backend, fileSet: sources[key] != nil)
        }
        return ConfigurationKey.named(key)?.show?(c)
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

    static func seconds(_ duration: Duration) -> String {
        number(Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }

    static func milliseconds(_ duration: Duration) -> String {
        number((Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18) * 1000)
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
