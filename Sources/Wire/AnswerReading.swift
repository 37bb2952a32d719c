/// What a client reads of an OpenAI-compatible answer: the text, the finish reason, the model,
/// the token counts and llama-server's timings; nothing else is decoded.
///
/// ``OpenAIChatResponse`` and ``OpenAIChatChunk`` hold every field, for a server that writes
/// them; a worker only reads these, once per answer and once per streamed token, and decoding
/// the whole response cost it about 15% more CPU per request (docs/BENCHMARKS.md, "The
/// redesign step"). The keys are the same; a test decodes both from the same bodies.
public struct OpenAIAnswerReading: Sendable, Decodable {
    public struct Choice: Sendable, Decodable {
        public struct Text: Sendable, Decodable {
            public var content: String?
        }

        /// The whole answer's message.
        public var message: Text?
        /// A streamed chunk's new text.
        public var delta: Text?
        public var finishReason: String?

        private enum CodingKeys: String, CodingKey {
            case message, delta
            case finishReason = "finish_reason"
        }
    }

    public struct Usage: Sendable, Decodable {
        public var promptTokens: Int?
        public var completionTokens: Int?

        private enum CodingKeys: String, CodingKey {
            case promptTokens = "prompt_tokens"
            case completionTokens = "completion_tokens"
        }
    }

    public struct Timings: Sendable, Decodable {
        /// Prompt tokens taken from the server's cache (llama-server's `cache_n`), not computed.
        public var cacheN: Int?
        public var promptMs: Double?
        public var predictedMs: Double?
        public var predictedPerSecond: Double?

        private enum CodingKeys: String, CodingKey {
            case cacheN = "cache_n"
            case promptMs = "prompt_ms"
            case predictedMs = "predicted_ms"
            case predictedPerSecond = "predicted_per_second"
        }
    }

    public var model: String?
    /// Required in a whole answer (decode ``Whole``); a stream's usage chunk may have none.
    public var choices: [Choice]?
    public var usage: Usage?
    public var timings: Timings?
    /// Set on a stream's error event.
    public var error: OpenAIError?

    /// A whole answer: as ``OpenAIAnswerReading``, but an answer without `choices` is not one.
    public struct Whole: Sendable, Decodable {
        public var model: String?
        public var choices: [Choice]
        public var usage: Usage?
        public var timings: Timings?
    }
}
