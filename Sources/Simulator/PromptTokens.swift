/// One simulated token: a hash, so that equal text gives equal tokens and prefixes can be compared.
typealias PromptToken = UInt32

/// The simulator's stand-in for a tokenizer and chat template.
///
/// A message renders as four template tokens (start, role, separator, end) around one token per
/// whitespace-separated word, so a prompt costs what `Generator.promptTokens(_:)` has always counted.
/// The reply renders as the assistant header (start, role, separator) followed by the reply's words: that is
/// what a slot holds after generation, and what the next turn of the conversation repeats, as the assistant
/// message, up to and including its last word.
enum PromptTokens {
    /// The prompt's tokens, in order.
    static func sequence(_ messages: [ChatMessage]) -> [PromptToken] {
        var tokens: [PromptToken] = []
        tokens.reserveCapacity(count(messages))
        forEach(messages) { tokens.append($0) }
        return tokens
    }

    /// The number of tokens `sequence(_:)` returns, without building it.
    static func count(_ messages: [ChatMessage]) -> Int {
        var count = 0
        forEach(messages) { _ in count += 1 }
        return count
    }

    /// The tokens a slot holds after generating `text`: the assistant header, then the words of the reply.
    /// The end marker is not included: the model stops on it, and the next turn's prompt differs from there
    /// only if the client changed the reply.
    static func reply(_ text: String) -> [PromptToken] {
        var tokens: [PromptToken] = []
        header(role: "assistant") { tokens.append($0) }
        words(text) { tokens.append($0) }
        return tokens
    }

    /// Calls `body` with each token of the rendered conversation; the one walk behind `sequence` and `count`.
    private static func forEach(_ messages: [ChatMessage], _ body: (PromptToken) -> Void) {
        for message in messages {
            header(role: message.role, body)
            words(message.content, body)
            body(end)
        }
    }

    /// Calls `body` with the three template tokens that open a message of `role`.
    private static func header(role: String, _ body: (PromptToken) -> Void) {
        body(start)
        body(token(Generator.fnv1a(roleBasis, role.utf8)))
        body(separator)
    }

    /// Calls `body` with the hash of each run of non-whitespace bytes (space, tab, newline, carriage return).
    private static func words(_ text: String, _ body: (PromptToken) -> Void) {
        var hash = Generator.offsetBasis
        var inWord = false
        for byte in text.utf8 {
            let isSpace = byte == 0x20 || byte == 0x0A || byte == 0x09 || byte == 0x0D
            if isSpace {
                if inWord { body(token(hash)) }
                hash = Generator.offsetBasis
            } else {
                hash = Generator.fnv1a(hash, CollectionOfOne(byte))
            }
            inWord = !isSpace
        }
        if inWord { body(token(hash)) }
    }

    /// Folds a 64-bit hash into a token.
    private static func token(_ hash: UInt64) -> PromptToken {
        PromptToken(truncatingIfNeeded: hash ^ (hash >> 32))
    }

    /// A basis for role hashes apart from word hashes, so a message saying "user" is not the user role.
    private static let roleBasis = Generator.fnv1a(Generator.offsetBasis, "<|role|>".utf8)
    private static let start = token(Generator.fnv1a(Generator.offsetBasis, "<|start|>".utf8))
    private static let separator = token(Generator.fnv1a(Generator.offsetBasis, "<|sep|>".utf8))
    private static let end = token(Generator.fnv1a(Generator.offsetBasis, "<|end|>".utf8))
}
