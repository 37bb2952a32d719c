import Configuration
import Foundation
import LLMQBackends

/// `backends` or `backend.*`, and `fallbacks` or `fallback.*`: code that knows one backend
/// reads `backend`, so a list also sets it to its first item.
struct BackendSet {
    var backends: [BackendConfiguration] = []
    var fallbacks: [BackendConfiguration] = []
    let backend: BackendConfiguration
    private let hasFallbackList: Bool

    init(reading: ConfigurationReading, lists: [String: BackendList]) throws(ConfigurationError) {
        if let list = lists["backends"] {
            try Self.refuseSingle("backend", besides: list, reading: reading)
            backends = try Self.backends(in: list, reading: reading)
        }
        if let list = lists["fallbacks"] {
            try Self.refuseSingle("fallback", besides: list, reading: reading)
            fallbacks = try Self.backends(in: list, reading: reading)
        }
        hasFallbackList = lists["fallbacks"] != nil
        try Self.name(&backends, &fallbacks, reading: reading)
        if let first = backends.first {
            backend = first
        } else {
            backend = try BackendConfiguration(reading: reading.scoped(to: "backend"), required: true)!
        }
    }

    /// The one fallback: the first of `fallbacks`, else `fallback.*` if any of its keys is set.
    func fallback(reading: ConfigurationReading) throws(ConfigurationError) -> BackendConfiguration? {
        if hasFallbackList { return fallbacks.first }
        return try BackendConfiguration(reading: reading.scoped(to: "fallback"), required: false)
    }

    /// A list and `prefix.*` keys together are an error naming the first such key: which one
    /// the worker should use is the user's call.
    private static func refuseSingle(_ prefix: String, besides list: BackendList, reading: ConfigurationReading) throws(ConfigurationError) {
        for key in ConfigurationKey.all.map(\.name) where key.hasPrefix(prefix + ".") && reading.has(key) {
            throw reading.error(key, "set either \(list.key) (from \(list.source)) or \(prefix).*, not both")
        }
    }

    /// The backends of a list, each item read as `backend.*` is, through a reader of its own over
    /// the item's keys (`backends[1].endpoint`), so its errors and sources name the item.
    private static func backends(in list: BackendList, reading: ConfigurationReading) throws(ConfigurationError) -> [BackendConfiguration] {
        if list.items.isEmpty && list.key == "backends" {
            throw ConfigurationError(list.key, list.source, "must list at least one backend")
        }
        reading.sources[list.key] = list.source
        var backends: [BackendConfiguration] = []
        for (index, item) in list.items.enumerated() {
            let (backend, sources) = try Self.backend(item, at: "\(list.key)[\(index)]", source: list.source)
            reading.sources.merge(sources) { $1 }
            backends.append(backend)
        }
        return backends
    }

    /// One item of a list, and where each of its values came from.
    private static func backend(
        _ item: RawConfigValue, at prefix: String, source: ConfigurationSource
    ) throws(ConfigurationError) -> (BackendConfiguration, [String: ConfigurationSource]) {
        let problem = { (key: String, problem: String) in ConfigurationError(key, source, problem) }
        guard case .object(let fields) = item else {
            throw problem(prefix, "expected an object of backend keys (type, endpoint, ...), got \(describe(item))")
        }
        var values: [String: RawConfigValue] = [:]
        var contents: [AbsoluteConfigKey: ConfigValue] = [:]
        for (field, value) in fields.sorted(by: { $0.key < $1.key }) {
            let key = "\(prefix).\(field)"
            guard ConfigurationKey.itemFields.contains(field) else {
                let close = closest(to: field, among: ConfigurationKey.itemFields)
                throw problem(
                    key, "unknown key" + (close.map { "; did you mean \"\(prefix).\($0)\"?" } ?? "; a backend has \(ConfigurationKey.itemFields.joined(separator: ", "))"))
            }
            if case .null = value { continue }
            values[key] = value
            if field == "models" { continue }  // a list or one name, checked below
            if let single = value.notSingle { throw problem(key, single) }
            contents[AbsoluteConfigKey(ConfigKey(key))] = ConfigValue(value.content!, isSecret: ConfigurationKey.isSecret(key))
        }
        let reading = ConfigurationReading(providers: [InMemoryProvider(name: prefix, values: contents)], layers: [.item(source: source, values: values)])
        let item = reading.scoped(to: prefix)
        var backend: BackendConfiguration
        do {
            backend = try BackendConfiguration(reading: item, required: true)!
        } catch where error.source.isEmpty {
            // A key the item lacks (an openai endpoint): the item is in the list's source.
            throw problem(error.key, error.problem)
        }
        backend.name = try item.name("name")
        backend.weight = try item.number("weight")
        backend.slots = try item.whole("slots")
        if let models = values["\(prefix).models"] {
            backend.models = try Self.models(models, serving: backend.model) { problem("\(prefix).models", $0) }
            reading.sources["\(prefix).models"] = source
        }
        return (backend, reading.sources)
    }

    /// `models`: a list of names or one name, the backend's own model added.
    private static func models(
        _ value: RawConfigValue, serving model: String?, problem: (String) -> ConfigurationError
    ) throws(ConfigurationError) -> [String] {
        let names: [String]
        switch value {
        case .string(let name): names = [name]
        case .array(let items):
            names = try items.map { (item: RawConfigValue) throws(ConfigurationError) -> String in
                guard case .string(let name) = item else { throw problem("expected a list of model names, got \(describe(item)) in it") }
                return name
            }
        default: throw problem("expected a list of model names or one name, got \(describe(value))")
        }
        guard !names.isEmpty else { throw problem("must name at least one model; leave it out to serve any") }
        guard names.allSatisfy({ !$0.trimmingCharacters(in: .whitespaces).isEmpty }) else { throw problem("a model name must not be empty") }
        var served = names
        if let model, !served.contains(model) { served.append(model) }
        return served
    }

    /// Names the backends of both lists: a name given twice is an error; an item without one
    /// gets its type, then `type-2`, `type-3`... for later ones of that type, skipping names
    /// already given.
    private static func name(
        _ backends: inout [BackendConfiguration], _ fallbacks: inout [BackendConfiguration], reading: ConfigurationReading
    ) throws(ConfigurationError) {
        var owners: [String: String] = [:]
        for (listKey, list) in [("backends", backends), ("fallbacks", fallbacks)] {
            for (index, backend) in list.enumerated() {
                guard let name = backend.name else { continue }
                let key = "\(listKey)[\(index)].name"
                if let owner = owners[name] { throw reading.error(key, "\"\(name)\" is already the name of \(owner)") }
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
}

extension BackendConfiguration {
    /// `backend.*`, `fallback.*` or one item of a list. Nil when it is not `required` and none
    /// of its keys is set.
    init?(reading backend: ConfigurationScope, required: Bool) throws(ConfigurationError) {
        let present = ConfigurationKey.fixedKeys.contains { $0.hasPrefix(backend.prefix + ".") && backend.reading.has($0) }
        if !required && !present { return nil }
        guard let kind = try backend.choice("type", Kind.init(rawValue:)) ?? (required ? .llamaCpp : nil) else {
            throw backend.error("type", "required when any \(backend.prefix).* key is set (one of llama-cpp, ollama, openai)")
        }
        guard let endpoint = try backend.name("endpoint") ?? kind.defaultEndpoint else {
            throw backend.error("endpoint", "required for the \(kind.rawValue) backend")
        }
        self.init(kind: kind, endpoint: endpoint)
        do {
            _ = try resolvedEndpoint()
        } catch {
            throw backend.error("endpoint", error.reason)
        }
        // No model is valid for every kind: a request must then name its model.
        model = try backend.reading.aliased(backend.key("model"), backend.key("modelLoaded"))
        description = try backend.text("description")
        apiKey = try backend.text("apiKey")
        if let path = try backend.name("apiKeyFile") {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw backend.error("apiKeyFile", "cannot read \(path)")
            }
            apiKey = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try backend.update(&connectTimeout, "connectTimeoutSeconds")
        try backend.update(&requestTimeout, "timeoutSeconds")
    }
}
