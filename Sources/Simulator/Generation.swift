/// Why a completion ended, in OpenAI's and Ollama's shared vocabulary.
enum FinishReason: String, Sendable {
    /// The request's own token limit was reached.
    case length
    /// The model "chose" to stop: the default length or a stop sequence.
    case stop
}

/// The deterministic text a request gets, and the token boundaries to stream it by.
struct Completion: Sendable {
    /// The whole completion.
    let text: String
    /// UTF-8 offset in `text` where each token ends; token i spans `tokenEnds[i-1]..<tokenEnds[i]`.
    let tokenEnds: [Int]
    let finishReason: FinishReason
    let promptTokens: Int

    var completionTokens: Int { tokenEnds.count }

    /// The text of token `index` (the first has no leading space, the others do, like real BPE pieces).
    func token(_ index: Int) -> Substring {
        let utf8 = text.utf8
        let start = utf8.index(utf8.startIndex, offsetBy: index == 0 ? 0 : tokenEnds[index - 1])
        let end = utf8.index(utf8.startIndex, offsetBy: tokenEnds[index])
        return text[start..<end]
    }
}

/// Makes completions: k words picked by a hash of (last user message, seed, token index), so the same
/// request always gets the same text while different prompts get different text.
enum Generator {
    /// Words short enough that token counts and byte counts stay predictable.
    static let words: [String] = [
        "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "alpha", "beta", "gamma", "delta",
        "river", "stone", "cloud", "light", "queue", "worker", "token", "model", "simple", "answer", "green",
        "ocean", "paper", "signal", "vector", "matrix", "garden", "window", "orbit", "planet", "silver", "copper",
        "engine", "bridge", "market", "winter", "summer", "forest", "mirror", "castle", "rocket", "harbor",
        "violet", "thunder", "pixel", "kernel", "socket", "packet", "stream", "buffer", "cache", "thread",
        "lambda", "tensor", "prompt", "reply", "echo", "north", "south", "east", "west", "zero",
    ]

    /// Builds the completion for a request.
    /// - Parameters:
    ///   - request: the decoded request.
    ///   - defaultTokens: length when the request sets no limit.
    static func complete(_ request: ChatRequest, defaultTokens: Int) -> Completion {
        let count = request.maxTokens ?? defaultTokens
        let lastUser = request.messages.last(where: { $0.role == "user" })?.content ?? ""
        var hash = fnv1a(offsetBasis, lastUser.utf8)
        hash = fnv1a(hash, UInt64(bitPattern: request.seed))

        var text = ""
        text.reserveCapacity(count * 7)
        var tokenEnds: [Int] = []
        tokenEnds.reserveCapacity(count)
        var length = 0
        for index in 0..<count {
            var mixed = fnv1a(hash, UInt64(index))
            let word = words[Int(splitMix64(&mixed) % UInt64(words.count))]
            if index > 0 {
                text.append(" ")
                length += 1
            }
            text.append(word)
            length += word.utf8.count
            tokenEnds.append(length)
        }

        var finishReason: FinishReason = request.maxTokens == nil ? .stop : .length
        if !request.stop.isEmpty, let cut = earliestMatch(of: request.stop, in: text) {
            // Keep tokens that start before the stop sequence, and cut the last one where the sequence begins.
            var kept: [Int] = []
            var start = 0
            for end in tokenEnds where start < cut {
                kept.append(min(end, cut))
                start = end
            }
            tokenEnds = kept
            text = String(decoding: text.utf8.prefix(cut), as: UTF8.self)
            finishReason = .stop
        }
        return Completion(
            text: text,
            tokenEnds: tokenEnds,
            finishReason: finishReason,
            promptTokens: promptTokens(request.messages)
        )
    }

    /// Roughly what a chat template costs: one token per whitespace-separated word, plus 4 per message.
    /// The length of the token sequence the prompt cache compares (see ``PromptTokens``).
    static func promptTokens(_ messages: [ChatMessage]) -> Int {
        PromptTokens.count(messages)
    }

    /// UTF-8 offset of the earliest occurrence of any non-empty needle.
    static func earliestMatch(of needles: [String], in text: String) -> Int? {
        let haystack = Array(text.utf8)
        var best: Int?
        for needle in needles where !needle.isEmpty {
            let pattern = Array(needle.utf8)
            guard pattern.count <= haystack.count else { continue }
            let limit = min(best ?? haystack.count, haystack.count - pattern.count + 1)
            var position = 0
            while position < limit {
                if haystack[position] == pattern[0] && haystack[position..<position + pattern.count].elementsEqual(pattern) {
                    best = position
                    break
                }
                position += 1
            }
        }
        return best
    }

    static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    private static let prime: UInt64 = 0x0000_0100_0000_01b3

    static func fnv1a(_ hash: UInt64, _ bytes: some Sequence<UInt8>) -> UInt64 {
        var hash = hash
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* prime
        }
        return hash
    }

    static func fnv1a(_ hash: UInt64, _ value: UInt64) -> UInt64 {
        var hash = hash
        var value = value
        for _ in 0..<8 {
            hash = (hash ^ (value & 0xff)) &* prime
            value >>= 8
        }
        return hash
    }
}
