/// One message of a chat as both APIs carry it: `{"role": "user", "content": "hi"}`.
///
/// OpenAI also allows the content as an array of typed parts (`[{"type": "text", "text": "hi"}]`)
/// or as null (an assistant turn that only calls tools); Ollama sends a string. Decoding accepts
/// every form; a message without content decodes with `content` nil.
public struct ChatMessageBody: Sendable, Hashable, Codable {
    /// `system`, `user`, `assistant`, or any other role a server may use (`tool`).
    public var role: String
    public var content: MessageContent?

    public init(role: String, content: MessageContent?) {
        self.role = role
        self.content = content
    }

    /// A message whose content is one string, the form the backends send.
    public init(role: String, text: String) {
        self.init(role: role, content: .text(text))
    }

    /// The content as one text: parts joined by newlines (images dropped), "" when there is none.
    public var text: String { content?.text ?? "" }
}

/// A message's content: one string or an array of typed parts.
public enum MessageContent: Sendable, Hashable, Codable {
    case text(String)
    case parts([ContentPart])

    /// The text parts joined by newlines; parts without text (images) are dropped.
    public var text: String {
        switch self {
        case .text(let text): text
        case .parts(let parts): parts.compactMap(\.text).joined(separator: "\n")
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self = .text(text)
        } else {
            self = .parts(try container.decode([ContentPart].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .text(let text): try container.encode(text)
        case .parts(let parts): try container.encode(parts)
        }
    }
}

/// One part of a message's content (`{"type": "text", "text": "..."}`); other part types, such as
/// `image_url`, decode with their type only.
public struct ContentPart: Sendable, Hashable, Codable {
    public var type: String?
    public var text: String?

    public init(type: String? = "text", text: String?) {
        self.type = type
        self.text = text
    }
}

/// `stop` as OpenAI allows it: one string or an array of strings. Encodes as an array.
public struct StopSequences: Sendable, Hashable, Codable, ExpressibleByArrayLiteral {
    public var values: [String]

    public init(_ values: [String]) {
        self.values = values
    }

    public init(arrayLiteral elements: String...) {
        self.values = elements
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            values = []
        } else if let one = try? container.decode(String.self) {
            values = [one]
        } else {
            values = try container.decode([String].self)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(values)
    }
}

/// A message in an answer, with both fields optional because servers leave either out: OpenAI's
/// `message` and streamed `delta` (`role` only in the first chunk), Ollama's `message`.
public struct AnswerMessage: Sendable, Hashable, Codable {
    public var role: String?
    public var content: String?

    public init(role: String? = "assistant", content: String?) {
        self.role = role
        self.content = content
    }
}
