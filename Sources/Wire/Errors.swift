/// An OpenAI-style error, the `error` member of `{"error": {...}}`: also what llama-server sends,
/// in bodies, in `data:` events and in its `error:` stream lines.
public struct OpenAIError: Sendable, Hashable, Codable {
    /// llama-server sends the HTTP status as a number; OpenAI sends a string (`invalid_api_key`) or null.
    public var code: Code?
    public var message: String?
    /// `invalid_request_error`, `exceed_context_size_error`, `server_error`, ...
    public var type: String?
    /// The offending request field, when OpenAI names one.
    public var param: String?

    /// An error code as a number or a string.
    public enum Code: Sendable, Hashable, Codable {
        case number(Int)
        case text(String)

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let number = try? container.decode(Int.self) {
                self = .number(number)
            } else {
                self = .text(try container.decode(String.self))
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .number(let number): try container.encode(number)
            case .text(let text): try container.encode(text)
            }
        }
    }

    public init(code: Code? = nil, message: String?, type: String? = nil, param: String? = nil) {
        self.code = code
        self.message = message
        self.type = type
        self.param = param
    }
}

/// `{"error": {"code", "message", "type"}}`, the error body of OpenAI and llama-server.
public struct OpenAIErrorBody: Sendable, Hashable, Codable {
    public var error: OpenAIError

    public init(error: OpenAIError) {
        self.error = error
    }
}

/// `{"error": "text"}`, Ollama's error body, also sent as a line in the middle of a stream.
public struct OllamaErrorBody: Sendable, Hashable, Codable {
    public var error: String

    public init(error: String) {
        self.error = error
    }
}
