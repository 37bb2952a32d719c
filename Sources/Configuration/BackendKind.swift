import LLMQBackends

typealias BackendKind = BackendConfiguration.Kind

extension BackendConfiguration.Kind {
    /// The kinds' names, as `backend.type` takes them.
    static let names = allCases.map(\.rawValue)

    /// Where a backend of this kind listens by default; nil when there is no such place (a
    /// hosted OpenAI-compatible API must be named).
    public var defaultEndpoint: String? {
        switch self {
        case .llamaCpp: "http://127.0.0.1:8080"
        case .ollama: "http://127.0.0.1:11434"
        case .openAI: nil
        }
    }

    /// The default endpoints, as the README and `backend.endpoint`'s help give them.
    static var defaultEndpoints: String {
        allCases.compactMap { kind in kind.defaultEndpoint.map { "\($0) (\(kind.rawValue))" } }.joined(separator: ", ")
    }
}
