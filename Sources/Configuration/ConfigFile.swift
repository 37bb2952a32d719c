import Configuration
import Foundation

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

    /// The value as the library's content, for an in-memory provider; nil for what is not a
    /// single value.
    var content: ConfigContent? {
        switch self {
        case .string(let text): .string(text)
        case .number(let number): .double(number)
        case .bool(let flag): .bool(flag)
        case .object, .array, .null: nil
        }
    }

    /// The problem with a value where a key takes a single value; nil when it is one.
    var notSingle: String? {
        switch self {
        case .object: "expected a single value, found an object"
        case .array: "expected a single value, found an array"
        default: nil
        }
    }

    /// Whether the file's JSON type is the one asked for (numbers and booleans are not
    /// converted into each other; a string is converted by `parsed(as:)`).
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

func describe(_ value: RawConfigValue) -> String {
    switch value {
    case .string(let text): "\"\(text)\""
    case .number(let number): String(number)
    case .bool(let flag): String(flag)
    case .object: "an object"
    case .array: "an array"
    case .null: "null"
    }
}

/// The config file, parsed once: its flattened keys (checked strictly against the registry)
/// and a provider over them.
///
/// swift-configuration's `FileProvider<JSONSnapshot>` accepts any key (a reader only asks for
/// the keys it knows), cannot list what it holds, refuses arrays of objects and has only
/// `async` initializers; loading stays synchronous for every `llmq` command. So the file is
/// read and decoded here once, checked, and served by an `InMemoryProvider` over its leaves.
struct ConfigFile {
    let path: String
    let source: ConfigurationSource
    /// Every leaf of the file by dotted key, nulls left out.
    private(set) var values: [String: RawConfigValue] = [:]
    /// Queue names in `polling.poll<Name>` keys and in the `queues` object, in file order.
    private(set) var pollingNames: [String] = []
    private(set) var queueNames: [String] = []
    /// The items of `backends` and `fallbacks`, checked when the list is read.
    private(set) var lists: [String: [RawConfigValue]] = [:]

    init(path: String) throws(ConfigurationError) {
        self.path = path
        self.source = .file(path)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("config", source, "cannot read the file")
        }
        let root: RawConfigValue
        do {
            root = try JSONDecoder().decode(RawConfigValue.self, from: data)
        } catch {
            throw ConfigurationError("config", source, "not valid JSON: \(jsonErrorSummary(error))")
        }
        guard case .object(let object) = root else {
            throw ConfigurationError("config", source, "the top level must be a JSON object")
        }
        try check(object)
    }

    /// The library's provider over the file's values, secrets marked.
    var provider: InMemoryProvider {
        var contents: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, value) in values {
            guard let content = value.content else { continue }
            let secret = ConfigurationKey.isSecret(key) || (key == "redis.url" && urlHoldsPassword(text(of: value)))
            contents[AbsoluteConfigKey(ConfigKey(key))] = ConfigValue(content, isSecret: secret)
        }
        return InMemoryProvider(name: source.description, values: contents)
    }

    private func text(of value: RawConfigValue) -> Any {
        if case .string(let text) = value { return text }
        return ""
    }

    /// Walks the file's keys: every leaf must be a key of the registry.
    private mutating func check(_ object: [String: RawConfigValue]) throws(ConfigurationError) {
        let known = ConfigurationKey.fixedKeys
        let source = self.source
        var pending: [(String, RawConfigValue)] = object.sorted { $0.key > $1.key }.map { ($0.key, $0.value) }
        while let (key, value) = pending.popLast() {
            let problem = { (problem: String) in ConfigurationError(key, source, problem) }
            if ConfigurationKey.listKeys.contains(key) {
                if case .null = value { continue }
                guard case .array(let items) = value else { throw problem("expected a list of backends, got \(describe(value))") }
                lists[key] = items
                continue
            }
            if key == "polling" || key == "queues" {
                guard case .object(let members) = value else { throw problem("expected an object") }
                for (name, member) in members.sorted(by: { $0.key < $1.key }) {
                    if key == "polling" { try checkPolling(name, member) } else { try checkQueue(name, member) }
                }
                continue
            }
            if case .array = value, ConfigurationKey.listKeys.contains(key + "s") {
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
    }

    /// `polling.poll<Queue>: true or false`.
    private mutating func checkPolling(_ name: String, _ member: RawConfigValue) throws(ConfigurationError) {
        let source = self.source
        let error = { (problem: String) in ConfigurationError("polling.\(name)", source, problem) }
        guard name.hasPrefix("poll"), name.count > 4 else {
            throw error("unknown key; polling holds only poll<Queue>: true or false (e.g. pollHumanAI)")
        }
        let queue = String(name.dropFirst(4))
        guard ConfigurationLoader.isValidQueueName(queue) else {
            throw error("\"\(queue)\" is not a queue name (1-64 letters, digits, -, _ and .)")
        }
        guard case .bool = member else { throw error("expected true or false, got \(describe(member))") }
        pollingNames.append(queue)
        values["polling.\(name)"] = member
    }

    /// `queues.<Queue>`: an object of the queue's fields.
    private mutating func checkQueue(_ name: String, _ member: RawConfigValue) throws(ConfigurationError) {
        let memberKey = "queues.\(name)"
        guard ConfigurationLoader.isValidQueueName(name) else {
            throw ConfigurationError(memberKey, source, "\"\(name)\" is not a queue name (1-64 letters, digits, -, _ and .)")
        }
        guard case .object(let fields) = member else {
            throw ConfigurationError(memberKey, source, "expected an object of stream, priority, weight and minShare")
        }
        let allowed = ConfigurationKey.queueFields
        for (field, fieldValue) in fields {
            let fieldKey = "\(memberKey).\(field)"
            guard allowed.contains(field) else {
                let close = allowed.first { $0.lowercased() == field.lowercased() }
                throw ConfigurationError(
                    fieldKey, source,
                    "unknown key" + (close.map { "; did you mean \"\(memberKey).\($0)\"?" } ?? "; a queue has stream, priority, weight and minShare"))
            }
            if case .null = fieldValue { continue }
            if let problem = fieldValue.notSingle { throw ConfigurationError(fieldKey, source, problem) }
            values[fieldKey] = fieldValue
        }
        queueNames.append(name)
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
            throw ConfigurationError(key, source, "expected a JSON array of backends, not valid JSON: \(jsonErrorSummary(error))")
        }
        guard case .array(let items) = parsed else {
            throw ConfigurationError(key, source, "expected a JSON array of backends, got \(describe(parsed))")
        }
        self.init(key: key, items: items, source: source)
    }
}
