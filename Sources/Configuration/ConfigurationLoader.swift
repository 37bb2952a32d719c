import Configuration
import Foundation

/// Reads a ``WorkerConfiguration`` from a JSON file, `LLMQ_*` environment variables and
/// command-line flags, in that order of rising precedence.
///
/// Every key has one dotted name (`backend.endpoint`); its environment variable is `LLMQ_` and
/// the name in upper snake case (`LLMQ_BACKEND_ENDPOINT`); in the file it is a nested object
/// (`{"backend": {"endpoint": ...}}`). Unknown keys in the file and values of the wrong type
/// are errors, never silently ignored: a typo must not start a worker with a default. The keys
/// are declared once, in ``ConfigurationKey/all``.
///
/// The three layers are swift-configuration providers behind one `ConfigReader`: an
/// `InMemoryProvider` for the flags, an `EnvironmentVariablesProvider` (behind a
/// `KeyMappingProvider` that adds the `LLMQ_` prefix) and one over the file, parsed once.
/// The reader resolves precedence and types; this loader adds what the library does not do:
/// the strict key check of the file, one error line naming the key and its source, and the
/// checks across keys.
public enum ConfigurationLoader {
    /// Every key, with what it holds and its default: ``ConfigurationKey/all`` as pairs.
    public static var keys: [(key: String, help: String)] {
        ConfigurationKey.all.map { ($0.name, $0.help.isEmpty ? "" : "\($0.help) (default \($0.defaultText))") }
    }

    /// The environment variable for a key: ``ConfigurationKey/environmentName(for:)``.
    public static func environmentName(for key: String) -> String { ConfigurationKey.environmentName(for: key) }

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
        let variables = Self.variables(environment)
        let environmentProvider = EnvironmentVariablesProvider(
            environmentVariables: variables,
            secretsSpecifier: .dynamic { name, value in
                // LLMQ_BACKENDS may hold API keys.
                ConfigurationKey.all.contains { ($0.isSecret || ConfigurationKey.listKeys.contains($0.name)) && $0.environmentVariable == name }
                    || (name == environmentName(for: "redis.url") && urlHoldsPassword(value))
            })
        var providers: [any ConfigProvider] = [flagProvider(flags)]
        var layers: [Layer] = [
            .flags(names: Dictionary(flags.map { ($0.key, $0.flag) }) { $1 }, texts: Dictionary(flags.map { ($0.key, $0.value) }) { $1 })
        ]
        providers.append(KeyMappingProvider(upstream: environmentProvider) { $0.prepending(ConfigKey("llmq")) })
        layers.append(.environment(variables))

        var configFile: ConfigFile?
        if let path = file ?? ConfigReader(provider: environmentProvider).string(forKey: "LLMQ_CONFIG") {
            let parsed = try ConfigFile(path: path)
            providers.append(parsed.provider)
            layers.append(.file(parsed))
            configFile = parsed
        }

        // The lists are whole values: LLMQ_BACKENDS replaces the file's backends, item by item
        // keys do not merge across layers.
        var lists: [String: BackendList] = [:]
        for key in ConfigurationKey.listKeys {
            let name = environmentName(for: key)
            if let text = variables[name] {
                lists[key] = try BackendList(key: key, json: text, source: .environment(name))
            } else if let configFile, let items = configFile.lists[key] {
                lists[key] = BackendList(key: key, items: items, source: configFile.source)
            }
        }

        let reading = ConfigurationReading(providers: providers, layers: layers)
        let configuration = try WorkerConfiguration(reading: reading, defaultConsumer: defaultConsumer, file: configFile, lists: lists)
        return LoadedConfiguration(configuration: configuration, sources: reading.sources)
    }

    /// The `LLMQ_*` variables that are set. An empty value means "not set": compose files and
    /// shells pass `VAR=` for unset ones. EnvironmentVariablesProvider would hand out "" (and
    /// fail to parse it as a number), so such variables never reach it; values are trimmed, as
    /// the hand-written loader did.
    private static func variables(_ environment: [String: String]) -> [String: String] {
        var variables: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix("LLMQ_") {
            let trimmed = value.trimmingCharacters(in: .whitespaces)
            if !trimmed.isEmpty { variables[name] = trimmed }
        }
        return variables
    }

    /// The flags' values as text, secrets marked.
    private static func flagProvider(_ flags: [Flag]) -> InMemoryProvider {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for flag in flags {
            let secret = ConfigurationKey.isSecret(flag.key) || (flag.key == "redis.url" && urlHoldsPassword(flag.value))
            values[AbsoluteConfigKey(ConfigKey(flag.key))] = ConfigValue(.string(flag.value), isSecret: secret)
        }
        return InMemoryProvider(name: "flags", values: values)
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
