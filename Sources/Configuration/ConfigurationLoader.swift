import Configuration
import Foundation
import LLMQBackends
import LLMQRedis
import Logging
import NIOConcurrencyHelpers

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
///
/// The three layers are swift-configuration providers behind one `ConfigReader`: an
/// `InMemoryProvider` for the flags, an `EnvironmentVariablesProvider` (behind a
/// `KeyMappingProvider` that adds the `LLMQ_` prefix) and the file parsed by `JSONSnapshot`.
/// The reader resolves precedence and types; this loader adds what the library does not do:
/// the strict key check of the file, one error line naming the key and its source, and the
/// checks across keys.
public enum ConfigurationLoader {
    /// Every key, with what it holds. The README's configuration table mirrors this list.
    /// Keys with `<Queue>` in them stand for one key per queue name, `<N>` for each item of a
    /// list (`backends[0].weight`).
    public static let keys: [(key: String, help: String)] = [
        ("redis.url", "redis://[user:password@]host:port[/db] (default redis://127.0.0.1:6379)"),
        ("redis.username", "ACL user, overrides the URL's"),
        ("redis.password", "password, overrides the URL's"),
        ("redis.cluster", "true: Redis Cluster mode, the URL's node (and redis.nodes) only seed the slot map; keys default to {llmq}:... (default false)"),
        ("redis.nodes", "more cluster nodes to discover the slot map from, as host:port (environment: LLMQ_REDIS_NODES=h1:p1,h2:p2)"),
        ("redis.waitReplicas", "after each reply, WAIT until this many replicas have it, 0 = do not wait (default 0)"),
        ("redis.waitTimeoutMs", "how long that WAIT may take (default 1000)"),
        ("consumer", "this worker's consumer name (default hostname-pid)"),
        ("workerId", "the consumer name, as older config files call it (alias of consumer)"),
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
        ("queues", "environment only (LLMQ_QUEUES=a,b): more queues to serve, with the queues.<Queue>.* defaults"),
        ("queues.<Queue>.stream", "the queue's request stream (default streams.requests:<Queue>, e.g. llmq:requests:HumanAI)"),
        ("queues.<Queue>.priority", "whole number; higher queues get free slots first (default 0)"),
        ("queues.<Queue>.weight", "share of slots among queues of one priority, 1 or more (default 1)"),
        ("queues.<Queue>.minShare", "fraction of starts the queue gets whenever it has work, 0...1 (default 0)"),
        ("polling.poll<Queue>", "true serves the queue <Queue> (e.g. polling.pollHumanAI), false does not, even if it is in queues"),
        ("backends", "backends sharing the traffic: a list of objects with the backend.* keys and name, weight, slots, models; environment: LLMQ_BACKENDS as a JSON array; not with backend.*"),
        ("backends[<N>].name", "name in replies, status and metrics (default its type, then type-2, type-3...)"),
        ("backends[<N>].weight", "share of requests among backends serving a model, a number >= 0, 0 = out of rotation (default its slots)"),
        ("backends[<N>].slots", "requests it serves at once, 1...4096 (default llama-server's total_slots, else 1)"),
        ("backends[<N>].models", "models it serves, a list or one name (default any); its model is added"),
        ("fallbacks", "backends used only while every backend is unavailable, items as in backends; environment: LLMQ_FALLBACKS as a JSON array; [] = none; not with fallback.*"),
        ("backend.type", "llama-cpp, ollama or openai (default llama-cpp)"),
        ("backend.endpoint", "base URL or full API path (default per type)"),
        ("backend.model", "model asked for when a request names none (none: the request must name it)"),
        ("backend.modelLoaded", "alias of backend.model, as older config files call it"),
        ("backend.description", "free text for people, shown in the startup log"),
        ("backend.apiKey", "bearer token; prefer backend.apiKeyFile or the environment"),
        ("backend.apiKeyFile", "file holding the bearer token"),
        ("backend.connectTimeoutSeconds", "connect timeout (default 5)"),
        ("backend.timeoutSeconds", "whole-request timeout (default 300)"),
        ("fallback.type", "backend used while the primary fails (same keys as backend.*)"),
        ("fallback.endpoint", ""),
        ("fallback.model", ""),
        ("fallback.modelLoaded", ""),
        ("fallback.description", ""),
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
        ("streaming.flushMs", "a streamed answer's text is written at most this often per request, the first piece at once (default 10)"),
        ("streaming.flushTokens", "or as soon as this many pieces wait (default 16)"),
        ("streaming.expireSeconds", "a chunk stream expires this long after its last write (default 300)"),
        ("streaming.maxLength", "approximate cap on a chunk stream's length (MAXLEN ~), 0 = none (default 10000)"),
    ]

    /// Keys whose values are never printed or logged; they are marked secret in every provider
    /// and read, so the library's access log (`CONFIG_ACCESS_LOG_FILE`) redacts them too.
    /// `redis.url` is secret when it holds a password.
    static let secretKeys: Set<String> = ["redis.password", "backend.apiKey", "fallback.apiKey"]

    /// Whether a key's value is secret: one of ``secretKeys`` or a list item's `apiKey`.
    static func isSecret(_ key: String) -> Bool {
        secretKeys.contains(key) || (listKeys.contains { key.hasPrefix($0 + "[") } && key.hasSuffix("].apiKey"))
    }

    /// The keys that hold a list of backends, each item an object of ``itemFields``.
    static let listKeys = ["backends", "fallbacks"]

    /// The keys of one item of `backends` or `fallbacks`: those of `backend.*`, and what only
    /// a backend among several needs.
    static let itemFields = keys.map(\.key).filter { $0.hasPrefix("backend.") }.map { String($0.dropFirst("backend.".count)) }
        + ["name", "weight", "slots", "models"]

    /// The fixed keys a file may hold (the `<Queue>` patterns and the lists are checked on their own).
    static let fixedKeys = Set(keys.map(\.key).filter { !$0.contains("<") && $0 != "queues" && !listKeys.contains($0) })

    /// The environment variable for a key: `backend.apiKeyFile` -> `LLMQ_BACKEND_API_KEY_FILE`.
    ///
    /// The same mapping as swift-configuration's `EnvironmentVariablesProvider` applies to the
    /// key with `llmq.` in front: an underscore where a lower-case letter meets an upper-case one
    /// and between components, upper case, anything else than letters and digits as `_`
    /// (`queues.HumanAI.priority` -> `LLMQ_QUEUES_HUMAN_AI_PRIORITY`).
    public static func environmentName(for key: String) -> String {
        let components = ["llmq"] + key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        return components.map { component in
            var result = ""
            var previous: Character?
            for character in component {
                if let previous, previous.isLowercase, character.isUppercase { result.append("_") }
                result.append(character.isLetter || character.isNumber ? String(character).uppercased() : "_")
                previous = character
            }
            return result
        }.joined(separator: "_")
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
        try loadWithSources(file: file, environment: environment, flags: flags, defaultConsumer: defaultConsumer).configuration
    }

    /// Loads and validates a configuration, and says where each value came from
    /// (for `llmq worker --print-config`). Nothing is connected to.
    public static func loadWithSources(
        file: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        flags: [Flag] = [],
        defaultConsumer: String = defaultConsumerName()
    ) throws(ConfigurationError) -> LoadedConfiguration {
        // An empty value means "not set": compose files and shells pass `VAR=` for unset ones.
        // EnvironmentVariablesProvider would hand out "" (and fail to parse it as a number), so
        // such variables never reach it; values are trimmed, as the hand-written loader did.
        var variables: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix("LLMQ_") {
            let trimmed = value.trimmingCharacters(in: .whitespaces)
            if !trimmed.isEmpty { variables[name] = trimmed }
        }
        let environmentProvider = EnvironmentVariablesProvider(
            environmentVariables: variables,
            secretsSpecifier: .dynamic { name, value in
                // LLMQ_BACKENDS may hold API keys.
                (secretKeys.union(listKeys)).contains { environmentName(for: $0) == name }
                    || (name == environmentName(for: "redis.url") && urlHoldsPassword(value))
            })
        var layers: [Layer] = []
        var providers: [any ConfigProvider] = []

        var flagValues: [AbsoluteConfigKey: ConfigValue] = [:]
        var flagNames: [String: String] = [:]
        var flagTexts: [String: String] = [:]
        for flag in flags {
            let secret = secretKeys.contains(flag.key) || (flag.key == "redis.url" && urlHoldsPassword(flag.value))
            flagValues[AbsoluteConfigKey(ConfigKey(flag.key))] = ConfigValue(.string(flag.value), isSecret: secret)
            flagNames[flag.key] = flag.flag
            flagTexts[flag.key] = flag.value
        }
        providers.append(InMemoryProvider(name: "flags", values: flagValues))
        layers.append(.flags(names: flagNames, texts: flagTexts))

        providers.append(KeyMappingProvider(upstream: environmentProvider) { $0.prepending(ConfigKey("llmq")) })
        layers.append(.environment(variables))

        var fileContents: ConfigFile?
        let configPath = file ?? ConfigReader(provider: environmentProvider).string(forKey: "LLMQ_CONFIG")
        if let configPath {
            let parsed = try ConfigFile(path: configPath)
            providers.append(parsed.provider)
            layers.append(.file(path: configPath, values: parsed.values))
            fileContents = parsed
        }

        // The lists are whole values: LLMQ_BACKENDS replaces the file's backends, item by item
        // keys do not merge across layers.
        var lists: [String: BackendList] = [:]
        for key in listKeys {
            let name = environmentName(for: key)
            if let text = variables[name] {
                lists[key] = try BackendList(key: key, json: text, source: .environment(name))
            } else if let items = fileContents?.lists[key], let configPath {
                lists[key] = BackendList(key: key, items: items, source: .file(configPath))
            }
        }

        let reading = ConfigurationReading(providers: providers, layers: layers)
        let configuration = try reading.build(defaultConsumer: defaultConsumer, file: fileContents, lists: lists)
        return LoadedConfiguration(configuration: configuration, sources: reading.sources)
    }

    /// `hostname-pid`: unique per process on a host, and under Docker (where the hostname is
    /// the container ID) per container.
    public static func defaultConsumerName() -> String {
        "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// Queue names: 1 to 64 letters, digits, `-`, `_` and `.`, so they fit stream keys, metric
    /// labels and environment names.
    static func isValidQueueName(_ name: String) -> Bool {
        (1...64).contains(name.count)
            && name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)) }
    }
}

/// A value as read from JSON, or text from the environment and flags.
enum RawConfigValue: Decodable, Sendable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case object([String: RawConfigValue])
    case array([RawConfigValue])
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
            self = .array(try container.decode([RawConfigValue].self))
        }
    }
}

/// Where a value came from, as the one-line error and `--print-config` name it.
public enum ConfigurationSource: Sendable, Hashable, CustomStringConvertible {
    case defaultValue
    case file(String)
    case environment(String)
    case flag(String)

    public var description: String {
        switch self {
        case .defaultValue: "default"
        case .file(let path): "config file \(path)"
        case .environment(let name): "environment \(name)"
        case .flag(let flag): "flag \(flag)"
        }
    }
}

func urlHoldsPassword(_ value: Any) -> Bool {
    guard let text = value as? String, let password = URLComponents(string: text)?.password else { return false }
    return !password.isEmpty
}

/// One layer of configuration, in the order of the reader's providers (highest precedence first),
/// with the text each holds: the library's errors say neither where a value came from nor what it
/// was, and its in-memory provider does not convert text, so the loader looks here for both.
private enum Layer {
    case flags(names: [String: String], texts: [String: String])
    case environment([String: String])
    case file(path: String, values: [String: RawConfigValue])
    /// One item of a backend list, all from one source.
    case item(source: ConfigurationSource, values: [String: RawConfigValue])

    func source(for key: String) -> ConfigurationSource {
        switch self {
        case .item(let source, _): source
        case .flags(let names, _): .flag(names[key] ?? key)
        case .environment: .environment(ConfigurationLoader.environmentName(for: key))
        case .file(let path, _): .file(path)
        }
    }

    func raw(for key: String) -> RawConfigValue? {
        switch self {
        case .flags(_, let texts): texts[key].map(RawConfigValue.string)
        case .environment(let variables): variables[ConfigurationLoader.environmentName(for: key)].map(RawConfigValue.string)
        case .file(_, let values), .item(_, let values): values[key]
        }
    }
}

/// The config file: its flattened keys (checked strictly here) and the library's provider over it.
struct ConfigFile {
    let path: String
    /// Every leaf of the file by dotted key, nulls left out.
    fileprivate var values: [String: RawConfigValue] = [:]
    /// Queue names in `polling.poll<Name>` keys and in the `queues` object, in file order.
    var pollingNames: [String] = []
    var queueNames: [String] = []
    /// The items of `backends` and `fallbacks`, checked when the list is read.
    var lists: [String: [RawConfigValue]] = [:]
    let provider: JSONFileProvider

    init(path: String) throws(ConfigurationError) {
        self.path = path
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
        // swift-configuration's JSON snapshot accepts any key (a reader only asks for the keys it
        // knows) and cannot list what it holds, so the strict check runs over our own parse.
        let known = ConfigurationLoader.fixedKeys
        var pending: [(String, RawConfigValue)] = object.sorted { $0.key > $1.key }.map { ($0.key, $0.value) }
        while let (key, value) = pending.popLast() {
            let problem = { (problem: String) in ConfigurationError(key: key, source: source, problem: problem) }
            if ConfigurationLoader.listKeys.contains(key) {
                if case .null = value { continue }
                guard case .array(let items) = value else { throw problem("expected a list of backends, got \(describe(value))") }
                lists[key] = items
                continue
            }
            if key == "polling" || key == "queues" {
                guard case .object(let members) = value else { throw problem("expected an object") }
                for (name, member) in members.sorted(by: { $0.key < $1.key }) {
                    let memberKey = "\(key).\(name)"
                    let error = { (problem: String) in ConfigurationError(key: memberKey, source: source, problem: problem) }
                    if key == "polling" {
                        guard name.hasPrefix("poll"), name.count > 4 else {
                            throw error("unknown key; polling holds only poll<Queue>: true or false (e.g. pollHumanAI)")
                        }
                        let queue = String(name.dropFirst(4))
                        guard ConfigurationLoader.isValidQueueName(queue) else {
                            throw error("\"\(queue)\" is not a queue name (1-64 letters, digits, -, _ and .)")
                        }
                        guard case .bool = member else { throw error("expected true or false, got \(describe(member))") }
                        pollingNames.append(queue)
                        values[memberKey] = member
                    } else {
                        guard ConfigurationLoader.isValidQueueName(name) else {
                            throw error("\"\(name)\" is not a queue name (1-64 letters, digits, -, _ and .)")
                        }
                        guard case .object(let fields) = member else { throw error("expected an object of stream, priority, weight and minShare") }
                        let allowed = ["stream", "priority", "weight", "minShare"]
                        for (field, fieldValue) in fields {
                            let fieldKey = "\(memberKey).\(field)"
                            guard allowed.contains(field) else {
                                let close = allowed.first { $0.lowercased() == field.lowercased() }
                                throw ConfigurationError(
                                    key: fieldKey, source: source,
                                    problem: "unknown key" + (close.map { "; did you mean \"\(memberKey).\($0)\"?" } ?? "; a queue has stream, priority, weight and minShare"))
                            }
                            if case .null = fieldValue { continue }
                            if case .object = fieldValue {
                                throw ConfigurationError(key: fieldKey, source: source, problem: "expected a single value, found an object")
                            }
                            if case .array = fieldValue {
                                throw ConfigurationError(key: fieldKey, source: source, problem: "expected a single value, found an array")
                            }
                            values[fieldKey] = fieldValue
                        }
                        queueNames.append(name)
                    }
                }
                continue
            }
            if case .array = value, ConfigurationLoader.listKeys.contains(key + "s") {
                throw problem("expected an object; a list of backends is \"\(key)s\"")
            }
            if case .object(let members) = value {
                if known.contains(key) { throw problem("expected a single value, found an object") }
                pending.append(contentsOf: members.sorted { $0.key > $1.key }.map { ("\(key).\($0.key)", $0.value) })
                continue
            }
            guard known.contains(key) else {
                throw problem("unknown key\(suggestion(for: key, among: known))")
            }
            if case .null = value { continue }
            if case .array = value { throw problem("expected a single value, found an array") }
            values[key] = value
        }
        do {
            // JSONSnapshot refuses arrays of objects, and the lists are read from our own parse:
            // it gets the file without them (re-encoded only then, the other values unchanged).
            var snapshotData = data
            if object.keys.contains(where: ConfigurationLoader.listKeys.contains),
                var top = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            {
                for key in ConfigurationLoader.listKeys { top[key] = nil }
                snapshotData = try JSONSerialization.data(withJSONObject: top)
            }
            let snapshot = try JSONSnapshot(
                data: snapshotData.bytes, providerName: "config file \(path)",
                parsingOptions: .init(secretsSpecifier: .dynamic { key, value in
                    ConfigurationLoader.secretKeys.contains(key) || (key == "redis.url" && urlHoldsPassword(value))
                }))
            provider = JSONFileProvider(parsed: snapshot)
        } catch {
            throw ConfigurationError(key: "config", source: source, problem: "\(error)")
        }
    }
}

/// The config file as a provider, over the library's own JSON parser.
///
/// `FileProvider<JSONSnapshot>` has only `async` initializers, and loading stays synchronous for
/// every `llmq` command that calls it; the file is read here anyway, for the strict key check
/// and the "cannot read the file" error. So its bytes are read once and parsed by `JSONSnapshot`,
/// the snapshot `FileProvider` itself builds, and served unchanged.
struct JSONFileProvider: ConfigProvider {
    let parsed: JSONSnapshot

    var providerName: String { parsed.providerName }

    func value(forKey key: AbsoluteConfigKey, type: ConfigType) throws -> LookupResult {
        try parsed.value(forKey: key, type: type)
    }

    func fetchValue(forKey key: AbsoluteConfigKey, type: ConfigType) async throws -> LookupResult {
        try value(forKey: key, type: type)
    }

    nonisolated(nonsending) func watchValue<Return: ~Copyable>(
        forKey key: AbsoluteConfigKey,
        type: ConfigType,
        updatesHandler: nonisolated(nonsending) (_ updates: ConfigUpdatesAsyncSequence<Result<LookupResult, any Error>, Never>) async throws -> Return
    ) async throws -> Return {
        try await watchValueFromValue(forKey: key, type: type, updatesHandler: updatesHandler)
    }

    func snapshot() -> any ConfigSnapshot { parsed }

    nonisolated(nonsending) func watchSnapshot<Return: ~Copyable>(
        updatesHandler: nonisolated(nonsending) (_ updates: ConfigUpdatesAsyncSequence<any ConfigSnapshot, Never>) async throws -> Return
    ) async throws -> Return {
        try await watchSnapshotFromSnapshot(updatesHandler: updatesHandler)
    }
}

/// Keeps the reader's last access event. The getters return nil both for "not set" and for "set
/// but not convertible"; the event tells them apart, and which provider answered.
private final class LastAccess: AccessReporter {
    private let event = NIOLockedValueBox<AccessEvent?>(nil)

    func report(_ event: AccessEvent) {
        self.event.withLockedValue { $0 = event }
    }

    func take() -> AccessEvent? {
        event.withLockedValue { last in
            defer { last = nil }
            return last
        }
    }
}

/// The items of `backends` or `fallbacks`, from the file or from `LLMQ_BACKENDS` (JSON).
struct BackendList {
    let key: String
    let items: [RawConfigValue]
    let source: ConfigurationSource

    init(key: String, items: [RawConfigValue], source: ConfigurationSource) {
        self.key = key
        self.items = items
        self.source = source
    }

    init(key: String, json: String, source: ConfigurationSource) throws(ConfigurationError) {
        let parsed: RawConfigValue
        do {
            parsed = try JSONDecoder().decode(RawConfigValue.self, from: Data(json.utf8))
        } catch {
            throw ConfigurationError(key: key, source: source.description, problem: "expected a JSON array of backends, not valid JSON: \(jsonErrorSummary(error))")
        }
        guard case .array(let items) = parsed else {
            throw ConfigurationError(key: key, source: source.description, problem: "expected a JSON array of backends, got \(describe(parsed))")
        }
        self.init(key: key, items: items, source: source)
    }
}

/// The candidate a mistyped key most likely meant: the same but for case, else one at most two
/// edits away.
private func closest(to word: String, among candidates: [String]) -> String? {
    if let same = candidates.first(where: { $0.lowercased() == word.lowercased() }) { return same }
    // Levenshtein distance, one row at a time.
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var row = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var diagonal = row[0]
            row[0] = i + 1
            for (j, y) in b.enumerated() {
                let above = row[j + 1]
                row[j + 1] = min(above + 1, row[j] + 1, diagonal + (x == y ? 0 : 1))
                diagonal = above
            }
        }
        return row[b.count]
    }
    let scored = candidates.map { ($0, distance(Array(word.lowercased()), Array($0.lowercased()))) }.filter { $0.1 <= 2 }
    return scored.min { $0.1 < $1.1 }?.0
}

/// A value the reader found, and where.
private struct Found {
    var content: ConfigContent
    var source: ConfigurationSource
}

/// Typed reads through one `ConfigReader`, with the source of every value read kept for errors
/// and `--print-config`.
private final class ConfigurationReading {
    private let reader: ConfigReader
    private let access = LastAccess()
    private let layers: [Layer]
    /// Where each key's value came from; keys not here have their default.
    fileprivate(set) var sources: [String: ConfigurationSource] = [:]

    init(providers: [any ConfigProvider], layers: [Layer]) {
        self.layers = layers
        self.reader = ConfigReader(providers: providers, accessReporter: access)
    }

    private func error(_ key: String, _ problem: String) -> ConfigurationError {
        ConfigurationError(key: key, source: sources[key]?.description ?? "", problem: problem)
    }

    /// Reads `key` as `type`. Text the library would not convert (flags, which the in-memory
    /// provider keeps as text; a number written as a string in the file) is parsed here, as
    /// the environment provider parses it; anything else is the one-line error.
    /// - Parameter expecting: What the error says is expected, when not just the type.
    private func find(_ key: String, _ type: ConfigType, expecting: String? = nil) throws(ConfigurationError) -> Found? {
        let configKey = ConfigKey(key)
        let secret = ConfigurationLoader.isSecret(key)
        switch type {
        case .int: _ = reader.int(forKey: configKey, isSecret: secret)
        case .double: _ = reader.double(forKey: configKey, isSecret: secret)
        case .bool: _ = reader.bool(forKey: configKey, isSecret: secret)
        case .stringArray: _ = reader.stringArray(forKey: configKey, isSecret: secret)
        default: _ = reader.string(forKey: configKey, isSecret: secret)
        }
        guard let event = access.take(), let answer = event.providerResults.last, event.providerResults.count <= layers.count else {
            return nil
        }
        let layer = layers[event.providerResults.count - 1]
        let source = layer.source(for: key)
        let raw = layer.raw(for: key)
        switch answer.result {
        case .success(let lookup):
            guard let value = lookup.value else { return nil }
            sources[key] = source
            // JSONSerialization (under the JSON snapshot) cannot tell `true` from 1 on Linux, so
            // the snapshot converts between them; the file's own types are checked here.
            if let raw, !raw.fits(type) { throw mismatch(key, type, raw, source, expecting: expecting) }
            return Found(content: value.content, source: source)
        case .failure:
            sources[key] = source
            guard let raw, let content = raw.parsed(as: type) else { throw mismatch(key, type, raw ?? .null, source, expecting: expecting) }
            return Found(content: content, source: source)
        }
    }

    private func mismatch(
        _ key: String, _ type: ConfigType, _ raw: RawConfigValue, _ source: ConfigurationSource, expecting: String? = nil
    ) -> ConfigurationError {
        if let expecting {
            return ConfigurationError(key: key, source: source.description, problem: "expected \(expecting), got \(describe(raw))")
        }
        let expected =
            switch type {
            case .int: "expected a whole number, got \(describe(raw))"
            case .double: "expected a number, got \(describe(raw))"
            case .bool: "expected true or false, got \(describe(raw))"
            default: "expected a string"
            }
        return ConfigurationError(key: key, source: source.description, problem: expected)
    }

    func has(_ key: String) -> Bool {
        (try? find(key, .string)) != nil || sources[key] != nil
    }

    func string(_ key: String) throws(ConfigurationError) -> String? {
        guard case .string(let text)? = try find(key, .string)?.content else { return nil }
        return text
    }

    func nonEmptyString(_ key: String) throws(ConfigurationError) -> String? {
        guard let text = try string(key) else { return nil }
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { throw error(key, "must not be empty") }
        return text
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
        guard case .int(let number)? = try find(key, .int)?.content else { return nil }
        guard range.contains(number) else {
            throw error(key, "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    func number(_ key: String, in range: ClosedRange<Double>) throws(ConfigurationError) -> Double? {
        guard case .double(let number)? = try find(key, .double)?.content else { return nil }
        guard number.isFinite else { throw error(key, "expected a number, got \(number)") }
        guard range.contains(number) else {
            throw error(key, "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    /// A finite number >= `minimum`.
    func number(_ key: String, atLeast minimum: Double) throws(ConfigurationError) -> Double? {
        let expecting = "a number >= \(LoadedConfiguration.number(minimum))"
        guard case .double(let number)? = try find(key, .double, expecting: expecting)?.content else { return nil }
        guard number.isFinite, number >= minimum else { throw error(key, "expected \(expecting), got \(LoadedConfiguration.number(number))") }
        return number
    }

    func seconds(_ key: String, scale: Double = 1, in range: ClosedRange<Double>) throws(ConfigurationError) -> Duration? {
        guard let number = try number(key, in: range) else { return nil }
        return .milliseconds(Int64((number * scale * 1000).rounded()))
    }

    func bool(_ key: String) throws(ConfigurationError) -> Bool? {
        guard case .bool(let flag)? = try find(key, .bool)?.content else { return nil }
        return flag
    }

    func stringArray(_ key: String) throws(ConfigurationError) -> [String]? {
        guard case .stringArray(let list)? = try find(key, .stringArray)?.content else { return nil }
        return list
    }

    func choice<T>(_ key: String, _ options: [(String, T)]) throws(ConfigurationError) -> T? {
        guard let text = try string(key) else { return nil }
        let normalized = text.trimmingCharacters(in: .whitespaces).lowercased()
        if let match = options.first(where: { $0.0 == normalized }) { return match.1 }
        throw error(key, "\"\(text)\" is not one of \(options.map(\.0).joined(separator: ", "))")
    }

    /// A key and its alias (`consumer` and `workerId`): the one from the higher layer wins, as
    /// for any key; set in the same layer to different values is an error naming both.
    func aliased(_ key: String, _ alias: String) throws(ConfigurationError) -> String? {
        let main = try nonEmptyString(key)
        let other = try nonEmptyString(alias)
        guard let other else { return main }
        guard let main else {
            sources[key] = sources[alias]
            return other
        }
        if main == other { return main }
        let mainSource = sources[key]!, otherSource = sources[alias]!
        if mainSource == otherSource || layerIndex(mainSource) == layerIndex(otherSource) {
            throw ConfigurationError(
                key: alias, source: otherSource.description,
                problem: "\"\(other)\" conflicts with \(key) \"\(main)\" (from \(mainSource)); \(alias) is another name for \(key), set one")
        }
        if layerIndex(otherSource) < layerIndex(mainSource) {
            sources[key] = otherSource
            return other
        }
        return main
    }

    private func layerIndex(_ source: ConfigurationSource) -> Int {
        switch source {
        case .flag: 0
        case .environment: 1
        case .file: 2
        case .defaultValue: 3
        }
    }

    // MARK: Building

    func build(defaultConsumer: String, file: ConfigFile?, lists: [String: BackendList]) throws(ConfigurationError) -> WorkerConfiguration {
        // `backends` or `backend.*`, and `fallbacks` or `fallback.*`: code that knows one backend
        // reads `backend`, so a list also sets it to its first item.
        var backends: [BackendConfiguration] = []
        var fallbacks: [BackendConfiguration] = []
        if let list = lists["backends"] {
            try refuseSingle("backend", besides: list)
            backends = try backendList(list)
        }
        if let list = lists["fallbacks"] {
            try refuseSingle("fallback", besides: list)
            fallbacks = try backendList(list)
        }
        try name(&backends, &fallbacks)
        let backend: BackendConfiguration
        if let first = backends.first {
            backend = first
        } else {
            backend = try backendConfiguration(prefix: "backend", required: true)!
        }
        var configuration = WorkerConfiguration(consumer: try aliased("consumer", "workerId") ?? defaultConsumer, backend: backend)
        configuration.backends = backends
        configuration.fallbacks = fallbacks
        if lists["fallbacks"] == nil {
            configuration.fallback = try backendConfiguration(prefix: "fallback", required: false)
        } else {
            configuration.fallback = fallbacks.first
        }

        if let url = try nonEmptyString("redis.url") {
            do {
                configuration.redis = try RedisConfiguration(url: url)
            } catch {
                throw self.error("redis.url", error.reason)
            }
        }
        if let username = try string("redis.username") { configuration.redis.username = username }
        if let password = try string("redis.password") { configuration.redis.password = password }
        if let cluster = try bool("redis.cluster") { configuration.redis.cluster = cluster }
        for node in try stringArray("redis.nodes") ?? [] where !node.isEmpty {
            guard let parsed = RedisNode(node) else { throw error("redis.nodes", "\"\(node)\" is not host:port") }
            configuration.redis.clusterNodes.append(parsed)
        }
        if configuration.redis.cluster && configuration.redis.database != 0 {
            throw error("redis.url", "a Redis Cluster has only database 0; drop /\(configuration.redis.database) from the URL")
        }
        if !configuration.redis.clusterNodes.isEmpty && !configuration.redis.cluster {
            throw error("redis.nodes", "redis.nodes lists cluster nodes, but redis.cluster is not true")
        }
        if let value = try int("redis.waitReplicas", in: 0...100) { configuration.redis.waitReplicas = value }
        if let value = try seconds("redis.waitTimeoutMs", scale: 0.001, in: 0.001...600_000) { configuration.redis.waitTimeout = value }
        // In cluster mode the keys default to one hash tag, so that the reply script's keys share a slot.
        if configuration.redis.cluster { configuration.streams = .clusterDefaults }

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
            throw error(sources["streams.replies"] != nil ? "streams.replies" : "streams.requests", "the reply stream must differ from the request stream")
        }
        if streams.keepAnswered && [streams.requests, streams.replies, streams.dead].contains(streams.answered) {
            throw error("streams.answered", "the history stream must differ from the request, reply and dead-letter streams")
        }
        if [streams.requests, streams.replies, streams.dead].contains(streams.stats) {
            throw error("streams.stats", "the stats hash must differ from the request, reply and dead-letter streams")
        }
        if streams.dead == streams.requests {
            throw error(sources["streams.dead"] != nil ? "streams.dead" : "streams.requests", "the dead-letter stream must differ from the request stream")
        }
        configuration.queues = try queues(streams: streams, file: file)
        if streams.cluster {
            for queue in configuration.effectiveQueues {
                if let problem = streams.serving(queue.stream).clusterProblem() {
                    throw error(problem.key ?? (configuration.queues.isEmpty ? "streams.requests" : "queues.\(queue.name).stream"), problem.problem)
                }
            }
        }

        if let value = try int("limits.maxRequestBytes", in: 1024...(512 << 20)) { configuration.limits.maxRequestBytes = value }
        if let value = try int("limits.maxTokens", in: 1...1_000_000) { configuration.limits.maxTokens = value }
        if let value = try int("limits.defaultMaxTokens", in: 1...1_000_000) { configuration.limits.defaultMaxTokens = value }
        if configuration.limits.defaultMaxTokens > configuration.limits.maxTokens {
            throw error(
                sources["limits.defaultMaxTokens"] != nil ? "limits.defaultMaxTokens" : "limits.maxTokens",
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
        if let value = try seconds("streaming.flushMs", scale: 0.001, in: 0...10_000) { configuration.streaming.flushInterval = value }
        if let value = try int("streaming.flushTokens", in: 1...100_000) { configuration.streaming.flushTokens = value }
        if let value = try seconds("streaming.expireSeconds", in: 1...(30 * 86_400)) { configuration.streaming.expire = value }
        if let value = try int("streaming.maxLength", in: 0...100_000_000) { configuration.streaming.maxLength = value }
        return configuration
    }

    /// The served queues: `polling.poll<Name>: true`, the `queues` object, and `LLMQ_QUEUES`,
    /// less those whose poll flag is false; highest priority first, then by name.
    private func queues(streams: WorkerConfiguration.Streams, file: ConfigFile?) throws(ConfigurationError) -> [WorkerConfiguration.Queue] {
        var names: [String] = []
        var excluded: Set<String> = []
        for name in file?.pollingNames ?? [] {
            if try bool("polling.poll\(name)") == true { names.append(name) } else { excluded.insert(name) }
        }
        names += (file?.queueNames ?? []).filter { !excluded.contains($0) }
        for name in try stringArray("queues") ?? [] where !name.isEmpty {
            guard ConfigurationLoader.isValidQueueName(name) else {
                throw error("queues", "\"\(name)\" is not a queue name (1-64 letters, digits, -, _ and .)")
            }
            names.append(name)
        }
        var seen: Set<String> = []
        names = names.filter { seen.insert($0).inserted }

        var queues: [WorkerConfiguration.Queue] = []
        for name in names {
            let prefix = "queues.\(name)"
            var queue = WorkerConfiguration.Queue(name: name, stream: try nonEmptyString("\(prefix).stream") ?? "\(streams.requests):\(name)")
            if let value = try int("\(prefix).priority", in: -1_000_000...1_000_000) { queue.priority = value }
            if let value = try int("\(prefix).weight", in: 1...1_000_000) { queue.weight = value }
            if let value = try number("\(prefix).minShare", in: 0...1) { queue.minimumShare = value }
            let reserved: [(String, String)] = [
                (streams.replies, "the reply stream (streams.replies)"), (streams.dead, "the dead-letter stream (streams.dead)"),
                (streams.stats, "the stats hash (streams.stats)"),
            ] + (streams.keepAnswered ? [(streams.answered, "the history stream (streams.answered)")] : [])
            if let clash = reserved.first(where: { $0.0 == queue.stream }) {
                throw error("\(prefix).stream", "\"\(queue.stream)\" is \(clash.1); a queue needs a stream of its own")
            }
            if let other = queues.first(where: { $0.stream == queue.stream }) {
                throw error("\(prefix).stream", "\"\(queue.stream)\" is also the stream of queue \(other.name); each queue needs its own")
            }
            queues.append(queue)
        }
        return queues.sorted { ($0.priority, $1.name) > ($1.priority, $0.name) }
    }

    // MARK: Lists of backends

    /// A list and `prefix.*` keys together are an error naming the first such key: which one
    /// the worker should use is the user's call.
    private func refuseSingle(_ prefix: String, besides list: BackendList) throws(ConfigurationError) {
        for key in ConfigurationLoader.keys.map(\.key) where key.hasPrefix(prefix + ".") && has(key) {
            throw error(key, "set either \(list.key) (from \(list.source)) or \(prefix).*, not both")
        }
    }

    /// The backends of a list, each item read as `backend.*` is, through a reader of its own over
    /// the item's keys (`backends[1].endpoint`), so its errors and sources name the item.
    private func backendList(_ list: BackendList) throws(ConfigurationError) -> [BackendConfiguration] {
        if list.items.isEmpty && list.key == "backends" {
            throw ConfigurationError(key: list.key, source: list.source.description, problem: "must list at least one backend")
        }
        sources[list.key] = list.source
        var backends: [BackendConfiguration] = []
        for (index, item) in list.items.enumerated() {
            let prefix = "\(list.key)[\(index)]"
            let problem = { (key: String, problem: String) in ConfigurationError(key: key, source: list.source.description, problem: problem) }
            guard case .object(let fields) = item else {
                throw problem(prefix, "expected an object of backend keys (type, endpoint, ...), got \(describe(item))")
            }
            var values: [String: RawConfigValue] = [:]
            var contents: [AbsoluteConfigKey: ConfigValue] = [:]
            for (field, value) in fields.sorted(by: { $0.key < $1.key }) {
                let key = "\(prefix).\(field)"
                guard ConfigurationLoader.itemFields.contains(field) else {
                    let close = closest(to: field, among: ConfigurationLoader.itemFields)
                    throw problem(key, "unknown key" + (close.map { "; did you mean \"\(prefix).\($0)\"?" } ?? "; a backend has \(ConfigurationLoader.itemFields.joined(separator: ", "))"))
                }
                let content: ConfigContent
                switch value {
                case .null: continue
                case _ where field == "models":
                    values[key] = value  // a list or one name, checked below
                    continue
                case .object: throw problem(key, "expected a single value, found an object")
                case .array: throw problem(key, "expected a single value, found an array")
                case .string(let text): content = .string(text)
                case .number(let number): content = .double(number)
                case .bool(let flag): content = .bool(flag)
                }
                values[key] = value
                contents[AbsoluteConfigKey(ConfigKey(key))] = ConfigValue(content, isSecret: ConfigurationLoader.isSecret(key))
            }
            let item = ConfigurationReading(
                providers: [InMemoryProvider(name: prefix, values: contents)], layers: [.item(source: list.source, values: values)])
            var backend: BackendConfiguration
            do {
                backend = try item.backendConfiguration(prefix: prefix, required: true)!
            } catch where error.source.isEmpty {
                // A key the item lacks (an openai endpoint): the item is in the list's source.
                throw problem(error.key, error.problem)
            }
            backend.name = try item.nonEmptyString("\(prefix).name")
            backend.weight = try item.number("\(prefix).weight", atLeast: 0)
            backend.slots = try item.int("\(prefix).slots", in: 1...4096)
            if let models = values["\(prefix).models"] {
                let key = "\(prefix).models"
                let names: [String]
                switch models {
                case .string(let name): names = [name]
                case .array(let items):
                    names = try items.map { (item: RawConfigValue) throws(ConfigurationError) -> String in
                        guard case .string(let name) = item else { throw problem(key, "expected a list of model names, got \(describe(item)) in it") }
                        return name
                    }
                default: throw problem(key, "expected a list of model names or one name, got \(describe(models))")
                }
                guard !names.isEmpty else { throw problem(key, "must name at least one model; leave it out to serve any") }
                guard names.allSatisfy({ !$0.trimmingCharacters(in: .whitespaces).isEmpty }) else { throw problem(key, "a model name must not be empty") }
                var served = names
                if let model = backend.model, !served.contains(model) { served.append(model) }
                backend.models = served
                item.sources[key] = list.source
            }
            sources.merge(item.sources) { $1 }
            backends.append(backend)
        }
        return backends
    }

    /// Names the backends of both lists: a name given twice is an error; an item without one
    /// gets its type, then `type-2`, `type-3`... for later ones of that type, skipping names
    /// already given.
    private func name(_ backends: inout [BackendConfiguration], _ fallbacks: inout [BackendConfiguration]) throws(ConfigurationError) {
        var owners: [String: String] = [:]
        for (listKey, list) in [("backends", backends), ("fallbacks", fallbacks)] {
            for (index, backend) in list.enumerated() {
                guard let name = backend.name else { continue }
                let key = "\(listKey)[\(index)].name"
                if let owner = owners[name] { throw error(key, "\"\(name)\" is already the name of \(owner)") }
                owners[name] = "\(listKey)[\(index)]"
            }
        }
        var unnamed: [BackendConfiguration.Kind: Int] = [:]
        func assign(_ list: inout [BackendConfiguration], _ listKey: String) {
            for index in list.indices where list[index].name == nil {
                let kind = list[index].kind
                var name: String
                repeat {
                    let count = unnamed[kind, default: 0] + 1
                    unnamed[kind] = count
                    name = count == 1 ? kind.rawValue : "\(kind.rawValue)-\(count)"
                } while owners[name] != nil
                owners[name] = "\(listKey)[\(index)]"
                list[index].name = name
            }
        }
        assign(&backends, "backends")
        assign(&fallbacks, "fallbacks")
    }

    private func backendConfiguration(prefix: String, required: Bool) throws(ConfigurationError) -> BackendConfiguration? {
        let present = ConfigurationLoader.fixedKeys.contains { $0.hasPrefix(prefix + ".") && has($0) }
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
        // No model is valid for every kind: a request must then name its model.
        backend.model = try aliased("\(prefix).model", "\(prefix).modelLoaded")
        backend.description = try string("\(prefix).description")
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

extension RawConfigValue {
    /// Whether the file's JSON type is the one asked for (the snapshot converts numbers and
    /// booleans into each other; a string is converted by `parsed(as:)`).
    func fits(_ type: ConfigType) -> Bool {
        switch self {
        case .bool: type == .bool
        case .number: type == .int || type == .double
        default: true
        }
    }

    /// The value as `type`, from text as the environment provider reads it (trimmed, and `on`
    /// and `off` as booleans, as llmq always took them), or from a number for a string key.
    func parsed(as type: ConfigType) -> ConfigContent? {
        switch (self, type) {
        case (.string(let text), .string): return .string(text)
        case (.number(let number), .string):
            return .string(number == number.rounded() && abs(number) < 1e15 ? String(Int(number)) : String(number))
        case (.string(let text), .int): return Int(text.trimmingCharacters(in: .whitespaces)).map(ConfigContent.int)
        case (.number(let number), .int): return number == number.rounded() && abs(number) < 1e15 ? .int(Int(number)) : nil
        case (.string(let text), .double): return Double(text.trimmingCharacters(in: .whitespaces)).map(ConfigContent.double)
        case (.number(let number), .double): return .double(number)
        case (.bool(let flag), .bool): return .bool(flag)
        case (.string(let text), .bool):
            switch text.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true", "1", "yes", "on": return .bool(true)
            case "false", "0", "no", "off": return .bool(false)
            default: return nil
            }
        case (.string(let text), .stringArray):
            return .stringArray(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        default: return nil
        }
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

package func jsonErrorSummary(_ error: any Error) -> String {
    if case DecodingError.dataCorrupted(let context) = error {
        let underlying = (context.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String
        return underlying ?? context.debugDescription
    }
    return "\(error)"
}
