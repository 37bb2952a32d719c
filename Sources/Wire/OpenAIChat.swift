/// The body of `POST /v1/chat/completions` (OpenAI, llama-server, vLLM, Ollama's compatibility layer).
///
/// Optional fields left nil are not encoded. Sampling fields have the types the real servers
/// accept: `top_k` an integer, `seed` a 64-bit integer.
public struct OpenAIChatRequest: Sendable, Hashable, Codable {
    public var model: String?
    public var messages: [ChatMessageBody]
    public var maxTokens: Int?
    public var temperature: Double?
    public var topP: Double?
    /// Not part of OpenAI's API (OpenAI rejects it); llama-server, vLLM and Ollama accept it.
    public var topK: Int?
    public var seed: Int64?
    public var stop: StopSequences?
    /// Servers answer whole when it is absent.
    public var stream: Bool?
    /// With `include_usage`, asks for token counts at the end of a stream (OpenAI sends them only when asked).
    public var streamOptions: StreamOptions?
    /// The newer name of `max_tokens`; llama-server prefers it when both are given.
    public var maxCompletionTokens: Int?
    /// llama-server's own name for the limit, read after the other two.
    public var nPredict: Int?

    /// `stream_options`.
    public struct StreamOptions: Sendable, Hashable, Codable {
        public var includeUsage: Bool?

        public init(includeUsage: Bool? = true) {
            self.includeUsage = includeUsage
        }

        private enum CodingKeys: String, CodingKey {
            case includeUsage = "include_usage"
        }
    }

    public init(
        model: String? = nil,
        messages: [ChatMessageBody],
        maxTokens: Int? = nil,
        temperature: Double? = nil,
        topP: Double? = nil,
        topK: Int? = nil,
        seed: Int64? = nil,
        stop: StopSequences? = nil,
        stream: Bool? = nil,
        streamOptions: StreamOptions? = nil,
        maxCompletionTokens: Int? = nil,
        nPredict: Int? = nil
    ) {
        self.model = model
        self.messages = messages
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
        self.stop = stop
        self.stream = stream
        self.streamOptions = streamOptions
        self.maxCompletionTokens = maxCompletionTokens
        self.nPredict = nPredict
    }

    private enum CodingKeys: String, CodingKey {
        case model, messages
        case maxTokens = "max_tokens"
        case temperature
        case topP = "top_p"
        case topK = "top_k"
        case seed, stop, stream
        case streamOptions = "stream_options"
        case maxCompletionTokens = "max_completion_tokens"
        case nPredict = "n_predict"
    }
}

/// Token counts of an answer (`usage`).
public struct OpenAIUsage: Sendable, Hashable, Codable {
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var totalTokens: Int?

    public init(promptTokens: Int? = nil, completionTokens: Int? = nil, totalTokens: Int? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
    }

    private enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case totalTokens = "total_tokens"
    }
}

/// llama-server's own addition to the OpenAI response and last stream chunk (`timings`).
public struct LlamaTimings: Sendable, Hashable, Codable {
    public var promptN: Int?
    public var promptMs: Double?
    public var promptPerTokenMs: Double?
    public var promptPerSecond: Double?
    public var predictedN: Int?
    public var predictedMs: Double?
    public var predictedPerTokenMs: Double?
    public var predictedPerSecond: Double?

    public init(
        promptN: Int? = nil,
        promptMs: Double? = nil,
        promptPerTokenMs: Double? = nil,
        promptPerSecond: Double? = nil,
        predictedN: Int? = nil,
        predictedMs: Double? = nil,
        predictedPerTokenMs: Double? = nil,
        predictedPerSecond: Double? = nil
    ) {
        self.promptN = promptN
        self.promptMs = promptMs
        self.promptPerTokenMs = promptPerTokenMs
        self.promptPerSecond = promptPerSecond
        self.predictedN = predictedN
        self.predictedMs = predictedMs
        self.predictedPerTokenMs = predictedPerTokenMs
        self.predictedPerSecond = predictedPerSecond
    }

    private enum CodingKeys: String, CodingKey {
        case promptN = "prompt_n"
        case promptMs = "prompt_ms"
        case promptPerTokenMs = "prompt_per_token_ms"
        case promptPerSecond = "prompt_per_second"
        case predictedN = "predicted_n"
        case predictedMs = "predicted_ms"
        case predictedPerTokenMs = "predicted_per_token_ms"
        case predictedPerSecond = "predicted_per_second"
    }
}

/// The whole answer to a chat request that did not stream (`"object": "chat.completion"`).
///
/// Only `choices` is required when decoding: servers differ in what else they send.
public struct OpenAIChatResponse: Sendable, Hashable, Codable {
    public var id: String?
    public var object: String?
    public var created: Int64?
    public var model: String?
    public var systemFingerprint: String?
    public var choices: [OpenAIChatChoice]
    public var usage: OpenAIUsage?
    public var timings: LlamaTimings?

    public init(
        id: String? = nil,
        object: String? = "chat.completion",
        created: Int64? = nil,
        model: String? = nil,
        systemFingerprint: String? = nil,
        choices: [OpenAIChatChoice],
        usage: OpenAIUsage? = nil,
        timings: LlamaTimings? = nil
    ) {
        self.id = id
        self.object = object
        self.created = created
        self.model = model
        self.systemFingerprint = systemFingerprint
        self.choices = choices
        self.usage = usage
        self.timings = timings
    }

    private enum CodingKeys: String, CodingKey {
        case id, object, created, model
        case systemFingerprint = "system_fingerprint"
        case choices, usage, timings
    }
}

/// One event of a streamed answer, the JSON after `data: ` (`"object": "chat.completion.chunk"`):
/// a delta, the finish reason in the last choice, usage and llama-server's timings at the end
/// (in the last chunk or one of their own), or an error (`data: {"error": {...}}`).
public struct OpenAIChatChunk: Sendable, Hashable, Codable {
    public var id: String?
    public var object: String?
    public var created: Int64?
    public var model: String?
    public var systemFingerprint: String?
    public var choices: [OpenAIChatChoice]?
    public var usage: OpenAIUsage?
    public var timings: LlamaTimings?
    /// Set on an error event, which ends the stream.
    public var error: OpenAIError?

    public init(
        id: String? = nil,
        object: String? = "chat.completion.chunk",
        created: Int64? = nil,
        model: String? = nil,
        systemFingerprint: String? = nil,
        choices: [OpenAIChatChoice]? = nil,
        usage: OpenAIUsage? = nil,
        timings: LlamaTimings? = nil,
        error: OpenAIError? = nil
    ) {
        self.id = id
        self.object = object
        self.created = created
        self.model = model
        self.systemFingerprint = systemFingerprint
        self.choices = choices
        self.usage = usage
        self.timings = timings
        self.error = error
    }

    private enum CodingKeys: String, CodingKey {
        case id, object, created, model
        case systemFingerprint = "system_fingerprint"
        case choices, usage, timings, error
    }
}

/// One choice of an answer: with `message` in a whole answer, with `delta` in a stream chunk. Servers send one.
public struct OpenAIChatChoice: Sendable, Hashable, Codable {
    public var index: Int?
    /// The answer, in a whole answer.
    public var message: AnswerMessage?
    /// New text, in a stream chunk; `role` only in the first chunk.
    public var delta: AnswerMessage?
    /// `stop`, `length`, ...; in a stream, only in the last chunk of the answer.
    public var finishReason: String?

    public init(index: Int? = 0, message: AnswerMessage? = nil, delta: AnswerMessage? = nil, finishReason: String? = nil) {
        self.index = index
        self.message = message
        self.delta = delta
        self.finishReason = finishReason
    }

    private enum CodingKeys: String, CodingKey {
        case index, message, delta
        case finishReason = "finish_reason"
    }
}
