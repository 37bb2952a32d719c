import Foundation

/// One configuration key, declared once: what it holds, which values it takes, its help text,
/// its environment variable and whether it is secret. The strict file check, the reads, the
/// range checks, `--print-config` and the README's key table all come from
/// ``ConfigurationKey/all``; defaults live once, in ``WorkerConfiguration``, and are shown
/// from there (``defaultText``).
///
/// Keys with `<Queue>` in them stand for one key per queue name, `<N>` for each item of a
/// list (`backends[0].weight`).
public struct ConfigurationKey: Sendable {
    /// The values a key takes; the reads check them, the README table shows them.
    public enum Values: Sendable {
        /// Any text.
        case text
        /// Text that is not empty (or only spaces).
        case name
        /// A whole number in the range.
        case whole(ClosedRange<Int>)
        /// A number in the range.
        case number(ClosedRange<Double>)
        /// A finite number at least this.
        case numberAtLeast(Double)
        /// A number of seconds (`unit` 1) or milliseconds (`unit` 0.001) in the range.
        case duration(ClosedRange<Double>, unit: Double)
        /// true or false.
        case bool
        /// Comma-separated text, or a list.
        case list
        /// One of these words (in any case).
        case choice([String])
        /// A structured value read on its own (a list of backends, the queues).
        case structured
    }

    /// The dotted name (`backend.apiKeyFile`).
    public let name: String
    public let values: Values
    /// What the key does, for people.
    public let help: String
    /// The flag that sets it, if any (`--concurrency`).
    public let flag: String?
    /// Whether its value is never printed or logged.
    public let isSecret: Bool
    /// The default as people read it, when ``WorkerConfiguration``'s value does not say it
    /// (`hostname-pid`); nil shows the default configuration's value.
    /// The key this one is another name for (`workerId` for `consumer`); `--print-config`
    /// shows its value under that key.
    public let aliasOf: String?
    let defaultOverride: String?
    let environmentOverride: String?
    /// The key's value in a configuration, as `--print-config` shows it (secrets redacted);
    /// nil for the keys it shows on their own (backends, queues).
    let show: (@Sendable (WorkerConfiguration) -> String?)?

    init(
        _ name: String, _ values: Values, _ help: String, flag: String? = nil, secret: Bool = false,
        default defaultOverride: String? = nil, environment: String? = nil, alias aliasOf: String? = nil,
        show: (@Sendable (WorkerConfiguration) -> String?)? = nil
    ) {
        self.name = name
        self.values = values
        self.help = help
        self.flag = flag
        self.isSecret = secret
        self.defaultOverride = defaultOverride
        self.environmentOverride = environment
        self.aliasOf = aliasOf
        self.show = show
    }

    /// The environment variable that sets it: ``ConfigurationKey/environmentName(for:)`` of
    /// its name unless it has another.
    public var environmentVariable: String { environmentOverride ?? Self.environmentName(for: name) }

    /// The default as text: the value an empty configuration has for this key.
    public var defaultText: String {
        defaultOverride ?? LoadedConfiguration.defaults.value(of: name) ?? "(none)"
    }

    /// The same key under another prefix (`backend.type` as `fallback.type`).
    func renamed(from prefix: String, to other: String, help: String? = nil) -> ConfigurationKey {
        ConfigurationKey(
            other + name.dropFirst(prefix.count), values, help ?? self.help, flag: nil, secret: isSecret,
            default: nil, environment: nil, alias: aliasOf.map { other + $0.dropFirst(prefix.count) })
    }

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

    // MARK: Looking keys up

    private static let byName: [String: ConfigurationKey] = Dictionary(all.map { ($0.name, $0) }) { first, _ in first }

    /// The registry entry a concrete key falls under: `backends[2].endpoint` under
    /// `backend.endpoint`, `backends[2].slots` under `backends[<N>].slots`, `queues.HumanAI.weight`
    /// under `queues.<Queue>.weight`, `polling.pollHumanAI` under `polling.poll<Queue>`.
    static func entry(for key: String) -> ConfigurationKey? {
        if let entry = byName[key] { return entry }
        if listKeys.contains(where: { key.hasPrefix($0 + "[") }), let close = key.firstIndex(of: "]") {
            let field = key[key.index(after: close)...]
            return byName["backends[<N>]\(field)"] ?? byName["backend\(field)"]
        }
        // Queue names may hold dots: the field is the last component.
        if key.hasPrefix("queues."), let field = key.split(separator: ".").last { return byName["queues.<Queue>.\(field)"] }
        if key.hasPrefix("polling.poll") { return byName["polling.poll<Queue>"] }
        return nil
    }

    /// The registry entry of a key, by its declared name (`concurrency`, `backends[<N>].slots`).
    public static func named(_ name: String) -> ConfigurationKey? { byName[name] }

    /// The entry for a key the code reads; a key missing from the registry is a bug in llmq.
    static func declared(_ key: String) -> ConfigurationKey {
        guard let entry = entry(for: key) else { preconditionFailure("\(key) is not in ConfigurationKey.all") }
        return entry
    }

    /// Whether a key's value is secret (passwords, API keys, a list item's `apiKey`).
    static func isSecret(_ key: String) -> Bool { entry(for: key)?.isSecret ?? false }

    /// The keys that hold a list of backends, each item an object of ``itemFields``.
    static let listKeys = ["backends", "fallbacks"]

    /// The keys of one item of `backends` or `fallbacks`: those of `backend.*`, and what only
    /// a backend among several needs.
    static let itemFields =
        all.map(\.name).filter { $0.hasPrefix("backend.") }.map { String($0.dropFirst("backend.".count)) }
        + all.map(\.name).filter { $0.hasPrefix("backends[<N>].") }.map { String($0.dropFirst("backends[<N>].".count)) }

    /// The fields of one queue in the `queues` object.
    static let queueFields = all.map(\.name).filter { $0.hasPrefix("queues.<Queue>.") }.map { String($0.dropFirst("queues.<Queue>.".count)) }

    /// The fixed keys a file may hold (the `<Queue>` patterns and the lists are checked on their own).
    static let fixedKeys = Set(all.map(\.name).filter { !$0.contains("<") && $0 != "queues" && !listKeys.contains($0) })

    /// The keys that are another name for a key (`--print-config` shows them under it).
    static let aliases: Set<String> = Set(all.filter { $0.aliasOf != nil }.map(\.name))
}
