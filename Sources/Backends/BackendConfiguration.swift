import Foundation

/// Which LLM server to call and how.
public struct BackendConfiguration: Sendable, Hashable {
    /// The kinds of backend, chosen by `backend.type`.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// llama.cpp's `llama-server`, through its OpenAI-compatible API (reads its `timings`).
        case llamaCpp = "llama-cpp"
        /// Ollama, through its native `/api/chat` (or `/v1/chat/completions` when the endpoint names it).
        case ollama
        /// Any OpenAI-compatible server: vLLM, LM Studio, OpenAI itself.
        case openAI = "openai"
    }

    public var kind: Kind
    /// A base URL (`http://host:11434`) or a full path naming the API
    /// (`.../v1/chat/completions` or `.../api/chat`).
    public var endpoint: String
    /// The model asked for when a request names none. Without one, a request must name its
    /// model when the backend needs one (Ollama, OpenAI); llama-server serves the model it loaded.
    public var model: String?
    /// Free text for people (`backend.description`): shown in the startup log and status.
    public var description: String?
    /// The name replies, status and metrics give this backend (`backends[].name`); nil: its type
    /// (`llama-cpp`, `ollama`, `openai`), as a single `backend` is named.
    public var name: String?

    /// What replies, logs, metrics and the pool's slot leases call it: its ``name``, else its type.
    public var resolvedName: String { name ?? kind.rawValue }
    /// Share of requests among backends serving the same model (`backends[].weight`, >= 0;
    /// 0 takes it out of rotation); nil: its slot count, so traffic follows capacity.
    public var weight: Double?
    /// Requests it serves at once (llama-server's `--parallel`); nil: learned from llama-server's
    /// `/props` (`total_slots`) at start, else 1.
    public var slots: Int?
    /// The models it serves; nil: whatever a request asks for (a request naming no model goes to
    /// any backend). `model` is added to it when both are given.
    public var models: [String]?
    /// Sent as `Authorization: Bearer`; never logged.
    public var apiKey: String?
    /// Connecting to the backend.
    public var connectTimeout: Duration
    /// One whole completion, from connecting to the last byte.
    public var requestTimeout: Duration

    public init(
        kind: Kind,
        endpoint: String,
        model: String? = nil,
        apiKey: String? = nil,
        connectTimeout: Duration = .seconds(5),
        requestTimeout: Duration = .seconds(300)
    ) {
        self.kind = kind
        self.endpoint = endpoint
        self.model = model
        self.apiKey = apiKey
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
    }

    /// The wire protocols a backend can speak.
    public enum API: String, Sendable, Hashable {
        /// `POST /v1/chat/completions`
        case openAIChat = "openai-chat"
        /// `POST /api/chat`
        case ollamaChat = "ollama-chat"
    }

    /// The API and URL to call. A full path selects the API it names, whatever the kind, so a
    /// config that gives Ollama as `http://HOST:11434/v1/chat/completions` keeps working; a base
    /// URL gets the kind's native path.
    /// - Throws: ``EndpointError`` when the endpoint is not an http(s) URL or names an API llmq
    ///   does not speak.
    public func resolvedEndpoint() throws(EndpointError) -> (api: API, url: String) {
        let trimmed = endpoint.trimmingCharacters(in: .whitespaces)
        guard let scheme = ["http://", "https://"].first(where: { trimmed.hasPrefix($0) }) else {
            throw EndpointError(reason: "\"\(endpoint)\" is not an http:// or https:// URL")
        }
        var rest = trimmed.dropFirst(scheme.count)
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        let hostEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        guard rest.startIndex < hostEnd else {
            throw EndpointError(reason: "\"\(endpoint)\" has no host")
        }
        let url = scheme + rest
        let path = String(rest[hostEnd...])
        if path.hasSuffix("/chat/completions") { return (.openAIChat, url) }
        if path.hasSuffix("/api/chat") { return (.ollamaChat, url) }
        if path.hasSuffix("/api/generate") || path.hasSuffix("/completions") || path.hasSuffix("/completion") {
            throw EndpointError(reason: "\"\(endpoint)\" names a text-completion API; llmq speaks chat: use the base URL, .../v1/chat/completions or .../api/chat")
        }
        switch kind {
        case .ollama where !path.hasSuffix("/v1"):
            return (.ollamaChat, url + "/api/chat")
        case .ollama, .llamaCpp, .openAI:
            return (.openAIChat, url + (path.hasSuffix("/v1") ? "/chat/completions" : "/v1/chat/completions"))
        }
    }
}

/// An endpoint llmq cannot call.
public struct EndpointError: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}
