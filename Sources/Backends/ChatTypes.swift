/// One message of a chat.
public struct ChatMessage: Sendable, Hashable, Codable {
    public enum Role: String, Sendable, Hashable, Codable, CaseIterable {
        case system, user, assistant
    }

    public var role: Role
    public var content: String

    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }
}

/// A chat completion request, independent of the backend's API.
public struct ChatRequest: Sendable, Hashable {
    public var messages: [ChatMessage]
    /// The model to ask for; nil uses the backend's configured model.
    public var model: String?
    public var maxTokens: Int?
    public var temperature: Double?
    public var topP: Double?
    public var topK: Int?
    public var seed: Int?
    public var stop: [String]
    /// Which conversation it continues, for routing, never sent: its next turns go to the
    /// backend that holds its prefix in cache (see ``MemberSelection/home(for:model:isAvailable:)``).
    public var affinityKey: String?

    public init(
        messages: [ChatMessage],
        model: String? = nil,
        maxTokens: Int? = nil,
        temperature: Double? = nil,
        topP: Double? = nil,
        topK: Int? = nil,
        seed: Int? = nil,
        stop: [String] = []
    ) {
        self.messages = messages
        self.model = model
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
        self.stop = stop
    }
}

/// What a backend answered.
public struct ChatCompletion: Sendable, Hashable {
    public var content: String
    /// `stop`, `length`, ... as the backend reports it.
    public var finishReason: String?
    public var model: String?
    public var promptTokens: Int?
    public var completionTokens: Int?
    /// Time the backend spent on the prompt, when it reports it (llama-server `timings.prompt_ms`,
    /// Ollama `prompt_eval_duration`).
    public var promptMilliseconds: Double?
    /// Prompt tokens the backend took from its cache rather than computing them (llama-server's
    /// `timings.cache_n`), when it reports them.
    public var cachedPromptTokens: Int? = nil
    /// Time the backend spent generating, when it reports it.
    public var generationMilliseconds: Double?
    /// Generated tokens per second, when it reports it.
    public var tokensPerSecond: Double?
    /// From sending the request to the first generated text, when the answer was streamed.
    public var firstTokenMilliseconds: Double?
    /// The name of the backend that answered (differs from the primary's after a fallback).
    public var backend: String

    public init(
        content: String,
        finishReason: String? = nil,
        model: String? = nil,
        promptTokens: Int? = nil,
        completionTokens: Int? = nil,
        promptMilliseconds: Double? = nil,
        generationMilliseconds: Double? = nil,
        tokensPerSecond: Double? = nil,
        firstTokenMilliseconds: Double? = nil,
        backend: String
    ) {
        self.content = content
        self.finishReason = finishReason
        self.model = model
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.promptMilliseconds = promptMilliseconds
        self.generationMilliseconds = generationMilliseconds
        self.tokensPerSecond = tokensPerSecond
        self.firstTokenMilliseconds = firstTokenMilliseconds
        self.backend = backend
    }
}

/// Why a backend call failed, classified for retries and for the reply's `error_code`.
public struct BackendError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// No connection (refused, unreachable, connect timeout).
        case unavailable = "backend_unavailable"
        /// The backend did not answer within the timeout.
        case timeout = "backend_timeout"
        /// The backend is overloaded (HTTP 503 or 429).
        case busy = "backend_busy"
        /// The backend failed (HTTP 5xx).
        case serverError = "backend_error"
        /// The backend answered with something that is not the API's response.
        case badResponse = "backend_bad_response"
        /// The backend refused the request itself (HTTP 4xx): retrying cannot help.
        case rejected = "backend_rejected"
        /// The prompt and `max_tokens` do not fit the model's context.
        case contextExceeded = "context_exceeded"
        /// The backend does not have the requested model.
        case modelNotFound = "model_not_found"
    }

    public let code: Code
    public let message: String
    /// The HTTP status, when the backend answered.
    public let status: Int?
    /// How long the backend asked us to wait (`Retry-After`), if it did.
    public let retryAfter: Duration?

    public init(_ code: Code, _ message: String, status: Int? = nil, retryAfter: Duration? = nil) {
        self.code = code
        self.message = message
        self.status = status
        self.retryAfter = retryAfter
    }

    /// Whether the same request may succeed if tried again later.
    public var isTransient: Bool {
        switch code {
        case .unavailable, .timeout, .busy, .serverError, .badResponse: true
        case .rejected, .contextExceeded, .modelNotFound: false
        }
    }

    public var description: String { message }
}

/// An LLM server that completes chats.
public protocol ChatBackend: Sendable {
    /// The name reported in replies (`llama-cpp`, `ollama`, `openai`).
    var name: String { get }

    /// Sends one chat to the backend and waits for the whole completion.
    func complete(_ request: ChatRequest) async throws(BackendError) -> ChatCompletion

    /// Asks the backend to stream its answer and hands each piece of text to `onText` as it
    /// arrives (on the HTTP client's thread: it must be quick); returns the whole completion at
    /// the end, as ``complete(_:)`` does.
    /// - Throws: ``BackendError``, also when the stream breaks off midway (text already handed
    ///   over then belongs to a failed answer).
    func complete(_ request: ChatRequest, onText: @escaping @Sendable (String) -> Void) async throws(BackendError) -> ChatCompletion

    /// Closes the backend's connections; no request may follow.
    func shutdown()

    /// How many requests the server runs at once, when it can tell (llama-server's `/props`
    /// `total_slots`); nil when it cannot or does not answer.
    func parallelSlots() async -> Int?

    /// Whether ``parallelSlots()`` can answer at all (a llama-server): then no answer means the
    /// server is down.
    var reportsSlots: Bool { get }
}

extension ChatBackend {
    /// A backend that cannot stream hands over its whole answer at the end.
    public func complete(_ request: ChatRequest, onText: @escaping @Sendable (String) -> Void) async throws(BackendError) -> ChatCompletion {
        let completion = try await complete(request)
        if !completion.content.isEmpty { onText(completion.content) }
        return completion
    }

    public func parallelSlots() async -> Int? { nil }
    public var reportsSlots: Bool { false }
}
