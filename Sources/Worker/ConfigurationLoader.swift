import Foundation
import LLMQBackends
import LLMQRedis
import Logging

/// A configuration value llmq cannot use: which key, where it came from, and what is wrong.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public let key: String
    /// `config file PATH`, `environment LLMQ_X` or `flag --x`; empty for a key that is missing.
    public let source: String
    public let problem: String

    public init(key: String, source: String, problem: String) {
        self.key = key
        self.source = source
        self.problem = problem
    }

    public var description: String {
        source.isEmpty ? "\(key): \(problem)" : "\(key) (from \(source)): \(problem)"
    }
}

/// Reads a ``WorkerConfiguration`` from a JSON file, `LLMQ_*` environment variables and
/// command-line flags, in that order of rising precedence.
///
/// Every key has one dotted name (`backend.endpoint`); its environment variable is `LLMQ_` and
/// the name in upper snake case (`LLMQ_BACKEND_ENDPOINT`); in the file it is a nested object
/// (`{"backend": {"endpoint": ...}}`). Unknown keys in the file and values of the wrong type
/// are errors, never silently ignored: a typo must not start a worker with a default.
public enum ConfigurationLoader {
    /// Every key, with what it holds. The README's configuration table mirrors this list.
    public static let keys: [(key: String, help: String)] = [
        ("redis.url", "redis://[user:password@]host:port[/db] (default redis://127.0.0.1:6379)"),
        ("redis.username", "ACL user, overrides the URL's"),
        ("redis.password", "password, overrides the URL's"),
        ("consumer", "this worker's consumer name (default hostname-pid)"),
        ("concurrency", "requests in flight at once in this process (default 4)"),
        ("streams.requests", "request stream (default llmq:requests)"),
        ("streams.group", "consumer group (default llmq)"),
        ("streams.replies", "reply stream (default llmq:replies)"),
        ("streams.dead", "dead-letter stream (default llmq:dead)"),
        ("streams.replyMaxLength", "approximate cap on reply stream length, 0 = none (default 100000)"),
        ("streams.replyToPrefix", "required prefix of a request's reply_to (default llmq:)"),
        ("streams.deadMaxLength", "approximate cap on dead-letter stream length, 0 = none (default 10000)"),
        ("streams.keepAnswered", "copy answered requests to streams.answered before deleting them (default false)"),
        ("streams.answered", "history stream of answered requests (default llmq:answered)"),
        ("streams.answeredMaxLength", "approximate cap on the history stream's length, 0 = none (default 100000)"),
        ("streams.answeredMaxAgeSeconds", "trim history entries older than this, 0 = none (default 0)"),
        ("streams.stats", "hash of reply counts by status and error code (default llmq:stats)"),
        ("backend.type", "llama-cpp, ollama or openai (default llama-cpp)"),
        ("backend.endpoint", "base URL or full API path (default per type)"),
        ("backend.model", "model name (required for ollama and openai)"),
        ("backend.apiKey", "bearer token; prefer backend.apiKeyFile or the environment"),
        ("backend.apiKeyFile", "file holding the bearer token"),
        ("backend.connectTimeoutSeconds", "connect timeout (default 5)"),
        ("backend.timeoutSeconds", "whole-request timeout (default 300)"),
        ("fallback.type", "backend used while the primary fails (same keys as backend.*)"),
        ("fallback.endpoint", ""),
        ("fallback.model", ""),
        ("fallback.apiKey", ""),
        ("fallback.apiKeyFile", ""),
        ("fallback.connectTimeoutSeconds", ""),
        ("fallback.timeoutSeconds", ""),
        ("limits.maxRequestBytes", "largest request entry accepted (default 1048576)"),
        ("limits.maxTokens", "largest max_tokens accepted (default 8192)"),
        ("limits.defaultMaxTokens", "max_tokens when a request gives none (default 1024)"),
        ("retry.maxAttempts", "tries per backend for transient failures (default 3)"),
        ("retry.initialBackoffMs", "first backoff, doubled each retry, with jitter (default 200)"),
        ("retry.maxBackoffMs", "longest backoff (default 5000)"),
        ("breaker.failureThreshold", "consecutive failures that open the circuit (default 5)"),
        ("breaker.openSeconds", "time the circuit stays open before a probe (default 10)"),
        ("recovery.claimMinIdleMs", "idle time after which another worker takes over an entry (default 60000)"),
        ("recovery.claimIntervalMs", "how often to look for such entries (default 5000)"),
        ("recovery.maxDeliveries", "deliveries before an entry is dead-lettered (default 5)"),
        ("recovery.deleteIdleConsumersAfterSeconds", "remove consumers idle this long with nothing pending, 0 = never (default 600)"),
        ("shutdownGraceSeconds", "time in-flight requests get to finish on SIGTERM (default 30)"),
        ("readBlockMs", "XREADGROUP BLOCK time (default 2000)"),
        ("logLevel", "trace, debug, info, notice, warning, error or critical (default info)"),
        ("logFormat", "text or json (one JSON object per line) (default text)"),
        ("metrics.port", "port for /metrics, /healthz and /readyz, 0 = no listener (default 0)"),
        ("metrics.host", "address the metrics listener binds (default 127.0.0.1)"),
        ("metrics.queueIntervalMs", "how often each worker reads the queue gauges from Redis (default 5000)"),
    ]

    /// The environment variable for a key: `backend.apiKeyFile` -> `LLMQ_BACKEND_API_KEY_FILE`.
    public static func environmentName(for key: String) -> String {
        var name = "LLMQ_"
        for character in key {
            if character == "." {
                name.append("_")
            } else if character.isUppercase {
                name.append("_")
                name.append(character)
            } else {
                name.append(contentsOf: character.uppercased())
            }
        }
        return name
    }

    /// A flag's value, keyed by the configuration key it sets.
    public struct Flag: Sendable {
        public var key: String
        public var flag: String
        public var value: String
        public init(key: String, flag: String, value: String) {
            self.key = key
            self.flag = flag
            self.value = value
        }
    }

    /// Loads and validates a configuration. Nothing is connected to.
    /// - Parameters:
    ///   - file: The JSON file (`--config`); when nil, `LLMQ_CONFIG` names it, if set.
    ///   - environment: The process environment.
    ///   - flags: Values from command-line flags.
    ///   - defaultConsumer: The consumer name when none is configured.
    public static func load(
        file: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        flags: [Flag] = [],
        defaultConsumer: String = defaultConsumerName()
    ) throws(ConfigurationError) -> WorkerConfiguration {
        var values = Values()
        if let path = file ?? environment["LLMQ_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }) {
            try values.readFile(path)
        }
        for (key, _) in keys {
            // An empty value means "not set": compose files and shells pass `VAR=` for unset ones.
            if let value = environment[environmentName(for: key)], !value.trimmingCharacters(in: .whitespaces).isEmpty {
                values.set(key, .string(value), source: "environment \(environmentName(for: key))")
            }
        }
        for flag in flags {
            values.set(flag.key, .string(flag.value), source: "flag \(flag.flag)")
        }
        return try values.build(defaultConsumer: defaultConsumer)
    }

    /// `hostname-pid`: unique per process on a host, and under Docker (where the hostname is
    /// the container ID) per container.
    public static func defaultConsumerName() -> String {
        "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
    }
}

/// A value as read from JSON, or text from the environment and flags.
enum RawConfigValue: Decodable, Sendable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case object([String: RawConfigValue])
    case array
    case null

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([String: RawConfigValue].self) {
            self = .object(value)
        } else {
            self = .array
        }
    }
}

private struct Values {
    private var entries: [String: (value: RawConfigValue, source: String)] = [:]

    mutating func set(_ key: String, _ value: RawConfigValue, source: String) {
        entries[key] = (value, source)
    }

    mutating func readFile(_ path: String) throws(ConfigurationError) {
        let source = "config file \(path)"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(key: "config", source: source, problem: "cannot read the file")
        }
        let root: RawConfigValue
        do {
            root = try JSONDecoder().decode(RawConfigValue.self, from: data)
        } catch {
            throw ConfigurationError(key: "config", source: source, problem: "not valid JSON: \(jsonErrorSummary(error))")
        }
        guard case .object(let object) = root else {
            throw ConfigurationError(key: "config", source: source, problem: "the top level must be a JSON object")
        }
        let known = Set(ConfigurationLoader.keys.map(\.key))
        var pending: [(String, RawConfigValue)] = object.map { ($0.key, $0.value) }
        while let (key, value) = pending.popLast() {
            if case .object(let members) = value {
                if known.contains(key) {
                    throw ConfigurationError(key: key, source: source, problem: "expected a single value, found an object")
                }
                pending.append(contentsOf: members.map { ("\(key).\($0.key)", $0.value) })
                continue
            }
            guard known.contains(key) else {
                throw ConfigurationError(key: key, source: source, problem: "unknown key\(suggestion(for: key, among: known))")
            }
            if case .null = value { continue }
            set(key, value, source: source)
        }
    }

    // MARK: Typed access

    private func error(_ key: String, _ problem: String) -> ConfigurationError {
        ConfigurationError(key: key, source: entries[key]?.source ?? "", problem: problem)
    }

    func has(_ key: String) -> Bool { entries[key] != nil }

    func string(_ key: String) throws(ConfigurationError) -> String? {
        guard let (value, _) = entries[key] else { return nil }
        switch value {
        case .string(let text): return text
        case .number(let number): return number == number.rounded() ? String(Int(number)) : String(number)
        default: throw error(key, "expected a string")
        }
    }

    func nonEmptyString(_ key: String) throws(ConfigurationError) -> String? {
        guard let text = try string(key) else { return nil }
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { throw error(key, "must not be empty") }
        return text
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
        guard let (value, _) = entries[key] else { return nil }
        let number: Int?
        switch value {
        case .number(let double): number = double == double.rounded() && abs(double) < 1e15 ? Int(double) : nil
        case .string(let text): number = Int(text.trimmingCharacters(in: .whitespaces))
        default: number = nil
        }
        guard let number else { throw error(key, "expected a whole number, got \(describe(value))") }
        guard range.contains(number) else {
            throw error(key, "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    func seconds(_ key: String, scale: Double = 1, in range: ClosedRange<Double>) throws(ConfigurationError) -> Duration? {
        guard let (value, _) = entries[key] else { return nil }
        let number: Double?
        switch value {
        case .number(let double): number = double
        case .string(let text): number = Double(text.trimmingCharacters(in: .whitespaces))
        default: number = nil
        }
        guard let number, number.isFinite else { throw error(key, "expected a number, got \(describe(value))") }
        guard range.contains(number) else {
            throw error(key, "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return .milliseconds(Int64((number * scale * 1000).rounded()))
    }

    func bool(_ key: String) throws(ConfigurationError) -> Bool? {
        guard let (value, _) = entries[key] else { return nil }
        switch value {
        case .bool(let flag): return flag
        case .string(let text):
            switch text.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true", "1", "yes", "on": return true
            case "false", "0", "no", "off": return false
            default: break
            }
        default: break
        }
        throw error(key, "expected true or false, got \(describe(value))")
    }

    func choice<T>(_ key: String, _ options: [(String, T)]) throws(ConfigurationError) -> T? {
        guard let text = try string(key) else { return nil }
        let normalized = text.trimmingCharacters(in: .whitespaces).lowercased()
        if let match = options.first(where: { $0.0 == normalized }) { return match.1 }
        throw error(key, "\"\(text)\" is not one of \(options.map(\.0).joined(separator: ", "))")
    }

    // MARK: Building

    func build(defaultConsumer: String) throws(ConfigurationError) -> WorkerConfiguration {
        let backend = try backendConfiguration(prefix: "backend", required: true)!
        var configuration = WorkerConfiguration(consumer: try nonEmptyString("consumer") ?? defaultConsumer, backend: backend)
        configuration.fallback = try backendConfiguration(prefix: "fallback", required: false)

        if let url = try nonEmptyString("redis.url") {
            do {
                configuration.redis = try RedisConfiguration(url: url)
            } catch {
                throw self.error("redis.url", error.reason)
            }
        }
        if let username = try string("redis.username") { configuration.redis.username = username }
        if let password = try string("redis.password") { configuration.redis.password = password }

        if let value = try int("concurrency", in: 1...4096) { configuration.concurrency = value }
        if let value = try nonEmptyString("streams.requests") { configuration.streams.requests = value }
        if let value = try nonEmptyString("streams.group") { configuration.streams.group = value }
        if let value = try nonEmptyString("streams.replies") { configuration.streams.replies = value }
        if let value = try nonEmptyString("streams.dead") { configuration.streams.dead = value }
        if let value = try int("streams.replyMaxLength", in: 0...Int(Int32.max)) { configuration.streams.replyMaxLength = value }
        if let value = try string("streams.replyToPrefix") { configuration.streams.replyToPrefix = value }
        if let value = try int("streams.deadMaxLength", in: 0...Int(Int32.max)) { configuration.streams.deadMaxLength = value }
        if let value = try bool("streams.keepAnswered") { configuration.streams.keepAnswered = value }
        if let value = try nonEmptyString("streams.answered") { configuration.streams.answered = value }
        if let value = try int("streams.answeredMaxLength", in: 0...Int(Int32.max)) { configuration.streams.answeredMaxLength = value }
        if let value = try int("streams.answeredMaxAgeSeconds", in: 0...(100 * 365 * 86_400)) {
            configuration.streams.answeredMaxAgeSeconds = value
        }
        if let value = try nonEmptyString("streams.stats") { configuration.streams.stats = value }
        let streams = configuration.streams
        if streams.replies == streams.requests {
            throw error(has("streams.replies") ? "streams.replies" : "streams.requests", "the reply stream must differ from the request stream")
        }
        if streams.keepAnswered && [streams.requests, streams.replies, streams.dead].contains(streams.answered) {
            throw error("streams.answered", "the history stream must differ from the request, reply and dead-letter streams")
        }
        if [streams.requests, streams.replies, streams.dead].contains(streams.stats) {
            throw error("streams.stats", "the stats hash must differ from the request, reply and dead-letter streams")
        }
        if streams.dead == streams.requests {
            throw error(has("streams.dead") ? "streams.dead" : "streams.requests", "the dead-letter stream must differ from the request stream")
        }

        if let value = try int("limits.maxRequestBytes", in: 1024...(512 << 20)) { configuration.limits.maxRequestBytes = value }
        if let value = try int("limits.maxTokens", in: 1...1_000_000) { configuration.limits.maxTokens = value }
        if let value = try int("limits.defaultMaxTokens", in: 1...1_000_000) { configuration.limits.defaultMaxTokens = value }
        if configuration.limits.defaultMaxTokens > configuration.limits.maxTokens {
            throw error(
                has("limits.defaultMaxTokens") ? "limits.defaultMaxTokens" : "limits.maxTokens",
                "limits.defaultMaxTokens (\(configuration.limits.defaultMaxTokens)) exceeds limits.maxTokens (\(configuration.limits.maxTokens))")
        }

        if let value = try int("retry.maxAttempts", in: 1...100) { configuration.retry.maxAttempts = value }
        if let value = try seconds("retry.initialBackoffMs", scale: 0.001, in: 0...600_000) { configuration.retry.initialBackoff = value }
        if let value = try seconds("retry.maxBackoffMs", scale: 0.001, in: 0...3_600_000) { configuration.retry.maxBackoff = value }
        if let value = try int("breaker.failureThreshold", in: 1...10_000) { configuration.breaker.failureThreshold = value }
        if let value = try seconds("breaker.openSeconds", in: 0.001...86_400) { configuration.breaker.openDuration = value }
        if let value = try seconds("recovery.claimMinIdleMs", scale: 0.001, in: 100...86_400_000) { configuration.recovery.claimMinIdle = value }
        if let value = try seconds("recovery.claimIntervalMs", scale: 0.001, in: 10...3_600_000) { configuration.recovery.claimInterval = value }
        if let value = try int("recovery.maxDeliveries", in: 1...1000) { configuration.recovery.maxDeliveries = value }
        if let value = try seconds("recovery.deleteIdleConsumersAfterSeconds", in: 0...(365 * 86_400)) {
            configuration.recovery.deleteIdleConsumersAfter = value == .zero ? nil : value
        }
        if let value = try seconds("shutdownGraceSeconds", in: 0...86_400) { configuration.shutdownGrace = value }
        if let value = try seconds("readBlockMs", scale: 0.001, in: 1...60_000) { configuration.readBlock = value }
        if let value = try choice("logLevel", Logger.Level.allCases.map { ($0.rawValue, $0) }) { configuration.logLevel = value }
        if let value = try choice("logFormat", WorkerConfiguration.LogFormat.allCases.map { ($0.rawValue, $0) }) {
            configuration.logFormat = value
        }
        if let value = try int("metrics.port", in: 0...65535) { configuration.metrics.port = value == 0 ? nil : value }
        if let value = try nonEmptyString("metrics.host") { configuration.metrics.host = value }
        if let value = try seconds("metrics.queueIntervalMs", scale: 0.001, in: 100...3_600_000) {
            configuration.metrics.queueInterval = value
        }
        return configuration
    }

    private func backendConfiguration(prefix: String, required: Bool) throws(ConfigurationError) -> BackendConfiguration? {
        let present = entries.keys.contains { $0.hasPrefix(prefix + ".") }
        if !required && !present { return nil }
        let kinds = BackendConfiguration.Kind.allCases.map { ($0.rawValue, $0) }
        guard let kind = try choice("\(prefix).type", kinds) ?? (required ? .llamaCpp : nil) else {
            throw error("\(prefix).type", "required when any \(prefix).* key is set (one of llama-cpp, ollama, openai)")
        }
        let defaultEndpoint: String? =
            switch kind {
            case .llamaCpp: "http://127.0.0.1:8080"
            case .ollama: "http://127.0.0.1:11434"
            case .openAI: nil
            }
        guard let endpoint = try nonEmptyString("\(prefix).endpoint") ?? defaultEndpoint else {
            throw error("\(prefix).endpoint", "required for the \(kind.rawValue) backend")
        }
        var backend = BackendConfiguration(kind: kind, endpoint: endpoint)
        do {
            _ = try backend.resolvedEndpoint()
        } catch {
            throw self.error("\(prefix).endpoint", error.reason)
        }
        backend.model = try nonEmptyString("\(prefix).model")
        if backend.model == nil && kind != .llamaCpp {
            throw error("\(prefix).model", "required for the \(kind.rawValue) backend")
        }
        backend.apiKey = try string("\(prefix).apiKey")
        if let path = try nonEmptyString("\(prefix).apiKeyFile") {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw error("\(prefix).apiKeyFile", "cannot read \(path)")
            }
            backend.apiKey = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let value = try seconds("\(prefix).connectTimeoutSeconds", in: 0.001...3600) { backend.connectTimeout = value }
        if let value = try seconds("\(prefix).timeoutSeconds", in: 0.001...86_400) { backend.requestTimeout = value }
        return backend
    }
}

private func describe(_ value: RawConfigValue) -> String {
    switch value {
    case .string(let text): "\"\(text)\""
    case .number(let number): String(number)
    case .bool(let flag): String(flag)
    case .object: "an object"
    case .array: "an array"
    case .null: "null"
    }
}

private func suggestion(for key: String, among known: Set<String>) -> String {
    let leaf = key.split(separator: ".").last.map(String.init)?.lowercased() ?? key
    let close = known.filter { $0.split(separator: ".").last.map(String.init)?.lowercased() == leaf }
    if let match = close.sorted().first { return "; did you mean \"\(match)\"?" }
    return ""
}

func jsonErrorSummary(_ error: any Error) -> String {
    if case DecodingError.dataCorrupted(let context) = error {
        let underlying = (context.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String
        return underlying ?? context.debugDescription
    }
    return "\(error)"
}
