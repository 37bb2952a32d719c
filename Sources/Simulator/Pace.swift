/// How long one request's prompt and tokens take, with the fault set's slow factor applied.
///
/// The prompt time depends on the tokens the prompt cache held, which are known only once the request has a
/// slot; everything else is known on arrival.
struct Pace: Sendable {
    /// `promptMilliseconds`: paid by every request, cached or not.
    var promptFixedMilliseconds: Double
    /// `promptTokenMilliseconds`: paid for each prompt token the cache did not hold.
    var promptTokenMilliseconds: Double
    var promptTokens: Int
    /// Time per generated token.
    let token: Duration

    /// The pace of a request under `configuration`, slowed by `slowFactor`.
    init(_ configuration: SimulatorConfiguration, promptTokens: Int, slowFactor: Double) {
        self.promptFixedMilliseconds = configuration.promptMilliseconds * slowFactor
        self.promptTokenMilliseconds = configuration.promptTokenMilliseconds * slowFactor
        self.promptTokens = promptTokens
        self.token = Self.duration(milliseconds: configuration.tokenMilliseconds * slowFactor)
    }

    /// Whether anything about the request takes time; if not, it is answered without sleeping or watching.
    var takesTime: Bool {
        promptFixedMilliseconds > 0 || (promptTokenMilliseconds > 0 && promptTokens > 0) || token > .zero
    }

    /// Prompt processing with `cachedTokens` of the prompt already in the slot.
    func prompt(cachedTokens: Int) -> Duration {
        let computed = max(promptTokens - cachedTokens, 0)
        return Self.duration(milliseconds: promptFixedMilliseconds + Double(computed) * promptTokenMilliseconds)
    }

    /// From getting the slot to the answer: the prompt, and for a whole answer all its tokens too.
    func untilAnswer(cachedTokens: Int, completionTokens: Int, streaming: Bool) -> Duration {
        let prompt = prompt(cachedTokens: cachedTokens)
        return streaming ? prompt : prompt + token * completionTokens
    }

    /// A duration of `milliseconds`, capped at about 290 years so a huge product of settings and prompt length
    /// cannot overflow.
    static func duration(milliseconds: Double) -> Duration {
        let nanoseconds = milliseconds * 1_000_000
        guard nanoseconds < 0x1p62 else { return .nanoseconds(Int64(1) << 62) }
        return .nanoseconds(Int64(nanoseconds.rounded()))
    }
}
