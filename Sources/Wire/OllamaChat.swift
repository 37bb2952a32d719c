/// The body of Ollama's `POST /api/chat`.
public struct OllamaChatRequest: Sendable, Hashable, Codable {
    /// Required by Ollama; optional here so a body without it still decodes and can be refused by name.
    public var model: String?
    public var messages: [ChatMessageBody]?
    /// Ollama streams NDJSON unless this is false.
    public var stream: Bool?
    public var options: OllamaOptions?

    public init(model: String?, messages: [ChatMessageBody]?, stream: Bool? = nil, options: OllamaOptions? = nil) {
        self.model = model
        self.messages = messages
        self.stream = stream
        self.options = options
    }
}

/// Ollama's `options`: sampling and length.
public struct OllamaOptions: Sendable, Hashable, Codable {
    /// The completion limit; -1 is no limit, -2 fills the context.
    public var numPredict: Int?
    public var temperature: Double?
    public var topP: Double?
    public var topK: Int?
    public var seed: Int64?
    public var stop: StopSequences?
    /// The context size to load the model with.
    public var numCtx: Int?

    public init(
        numPredict: Int? = nil,
        temperature: Double? = nil,
        topP: Double? = nil,
        topK: Int? = nil,
        seed: Int64? = nil,
        stop: StopSequences? = nil,
        numCtx: Int? = nil
    ) {
        self.numPredict = numPredict
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
        self.stop = stop
        self.numCtx = numCtx
    }

    private enum CodingKeys: String, CodingKey {
        case numPredict = "num_predict"
        case temperature
        case topP = "top_p"
        case topK = "top_k"
        case seed, stop
        case numCtx = "num_ctx"
    }
}

/// One object of Ollama's chat answer: the whole answer (`"done": true` with the counts), or one
/// NDJSON line of a streamed one (a piece of the message, then a last line with `"done": true`,
/// an empty message and the counts).
///
/// Every field is optional when decoding. A failure in the middle of a stream comes as a line of
/// its own, `{"error": "..."}`, which decodes with only ``error`` set.
public struct OllamaChatResponse: Sendable, Hashable, Codable {
    public var model: String?
    /// RFC 3339 with nanoseconds.
    public var createdAt: String?
    public var message: AnswerMessage?
    /// `stop`, `length`, or `load` for a request without messages.
    public var doneReason: String?
    public var done: Bool?
    /// Nanoseconds, as are the other durations.
    public var totalDuration: Int64?
    public var loadDuration: Int64?
    public var promptEvalCount: Int?
    public var promptEvalDuration: Int64?
    public var evalCount: Int?
    public var evalDuration: Int64?
    public var error: String?

    public init(
        model: String? = nil,
        createdAt: String? = nil,
        message: AnswerMessage? = nil,
        doneReason: String? = nil,
        done: Bool? = nil,
        totalDuration: Int64? = nil,
        loadDuration: Int64? = nil,
        promptEvalCount: Int? = nil,
        promptEvalDuration: Int64? = nil,
        evalCount: Int? = nil,
        evalDuration: Int64? = nil,
        error: String? = nil
    ) {
        self.model = model
        self.createdAt = createdAt
        self.message = message
        self.doneReason = doneReason
        self.done = done
        self.totalDuration = totalDuration
        self.loadDuration = loadDuration
        self.promptEvalCount = promptEvalCount
        self.promptEvalDuration = promptEvalDuration
        self.evalCount = evalCount
        self.evalDuration = evalDuration
        self.error = error
    }

    private enum CodingKeys: String, CodingKey {
        case model
        case createdAt = "created_at"
        case message
        case doneReason = "done_reason"
        case done
        case totalDuration = "total_duration"
        case loadDuration = "load_duration"
        case promptEvalCount = "prompt_eval_count"
        case promptEvalDuration = "prompt_eval_duration"
        case evalCount = "eval_count"
        case evalDuration = "eval_duration"
        case error
    }
}
