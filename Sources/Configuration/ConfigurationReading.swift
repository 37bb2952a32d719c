import Configuration
import NIOConcurrencyHelpers

/// One layer of configuration, in the order of the reader's providers (highest precedence first),
/// with the text each holds: the library's errors say neither where a value came from nor what it
/// was, and its in-memory provider does not convert text, so the loader looks here for both.
enum Layer {
    case flags(names: [String: String], texts: [String: String])
    case environment([String: String])
    case file(ConfigFile)
    /// One item of a backend list, all from one source.
    case item(source: ConfigurationSource, values: [String: RawConfigValue])

    func source(for key: String) -> ConfigurationSource {
        switch self {
        case .item(let source, _): source
        case .flags(let names, _): .flag(names[key] ?? key)
        case .environment: .environment(ConfigurationKey.environmentName(for: key))
        case .file(let file): file.source
        }
    }

    func raw(for key: String) -> RawConfigValue? {
        switch self {
        case .flags(_, let texts): texts[key].map(RawConfigValue.string)
        case .environment(let variables): variables[ConfigurationKey.environmentName(for: key)].map(RawConfigValue.string)
        case .file(let file): file.values[key]
        case .item(_, let values): values[key]
        }
    }

    /// How high the layer's values rank: flags first.
    static func rank(of source: ConfigurationSource) -> Int {
        switch source {
        case .flag: 0
        case .environment: 1
        case .file: 2
        case .defaultValue: 3
        }
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

/// Reads through one `ConfigReader`, with the source of every value read kept for errors and
/// `--print-config`. The typed reads are on ``ConfigurationScope``.
final class ConfigurationReading {
    private let reader: ConfigReader
    private let access = LastAccess()
    private let layers: [Layer]
    /// Where each key's value came from; keys not here have their default.
    var sources: [String: ConfigurationSource] = [:]

    init(providers: [any ConfigProvider], layers: [Layer]) {
        self.layers = layers
        self.reader = ConfigReader(providers: providers, accessReporter: access)
    }

    /// The keys under `prefix` (`redis`, `backends[1]`), read by their last components.
    func scoped(to prefix: String) -> ConfigurationScope { ConfigurationScope(reading: self, prefix: prefix) }

    /// The keys at the top level.
    var root: ConfigurationScope { ConfigurationScope(reading: self, prefix: "") }

    func error(_ key: String, _ problem: String) -> ConfigurationError {
        ConfigurationError(key: key, source: sources[key]?.description ?? "", problem: problem)
    }

    /// Reads `key` as `type`. Text the library would not convert (flags, which the in-memory
    /// provider keeps as text; a number written as a string in the file) is parsed here, as
    /// the environment provider parses it; anything else is the one-line error.
    /// - Parameter expecting: What the error says is expected, when not just the type.
    func find(_ key: String, _ type: ConfigType, expecting: String? = nil) throws(ConfigurationError) -> ConfigContent? {
        let configKey = ConfigKey(key)
        let secret = ConfigurationKey.isSecret(key)
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
            // The file's own JSON types are checked here: `true` is not 1.
            if let raw, !raw.fits(type) { throw mismatch(key, type, raw, source, expecting: expecting) }
            return value.content
        case .failure:
            sources[key] = source
            guard let raw, let content = raw.parsed(as: type) else { throw mismatch(key, type, raw ?? .null, source, expecting: expecting) }
            return content
        }
    }

    private func mismatch(
        _ key: String, _ type: ConfigType, _ raw: RawConfigValue, _ source: ConfigurationSource, expecting: String? = nil
    ) -> ConfigurationError {
        if let expecting {
            return ConfigurationError(key, source, "expected \(expecting), got \(describe(raw))")
        }
        let expected =
            switch type {
            case .int: "expected a whole number, got \(describe(raw))"
            case .double: "expected a number, got \(describe(raw))"
            case .bool: "expected true or false, got \(describe(raw))"
            default: "expected a string"
            }
        return ConfigurationError(key, source, expected)
    }

    func has(_ key: String) -> Bool {
        (try? find(key, .string)) != nil || sources[key] != nil
    }

    /// A key and its alias (`consumer` and `workerId`): the one from the higher layer wins, as
    /// for any key; set in the same layer to different values is an error naming both.
    func aliased(_ key: String, _ alias: String) throws(ConfigurationError) -> String? {
        let main = try root.name(key)
        let other = try root.name(alias)
        guard let other else { return main }
        guard let main else {
            sources[key] = sources[alias]
            return other
        }
        if main == other { return main }
        let mainSource = sources[key]!, otherSource = sources[alias]!
        if mainSource == otherSource || Layer.rank(of: mainSource) == Layer.rank(of: otherSource) {
            throw ConfigurationError(
                alias, otherSource,
                "\"\(other)\" conflicts with \(key) \"\(main)\" (from \(mainSource)); \(alias) is another name for \(key), set one")
        }
        if Layer.rank(of: otherSource) < Layer.rank(of: mainSource) {
            sources[key] = otherSource
            return other
        }
        return main
    }
}
