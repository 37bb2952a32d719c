import Hummingbird

/// Everything a response needs after admission; `Sendable` so the streaming body can carry it.
struct StreamPlan: Sendable {
    var flavor: APIFlavor
    var completion: Completion
    var model: String
    var id: String
    var created: Int64
    var arrival: ContinuousClock.Instant
    /// When the slot was granted; token deadlines count from here so a stream does not drift.
    var start: ContinuousClock.Instant
    /// Prompt tokens the prompt cache held.
    var cachedTokens: Int
    /// Prompt processing of the tokens the cache did not hold.
    var promptDuration: Duration
    var tokenDuration: Duration
    var midStreamError: Bool

    func report(completionTokens: Int) -> GenerationReport {
        GenerationReport(
            completion: completion,
            cachedTokens: cachedTokens,
            promptDuration: promptDuration,
            evalDuration: tokenDuration * completionTokens,
            queueDuration: start - arrival,
            totalDuration: ContinuousClock.now - arrival
        )
    }

    /// Writes the stream and counts how it ended: completed, mid-stream fault, or cancelled (the client went away).
    /// The outcome is counted before the last write, so a client that has read the whole stream sees it in `/sim/stats`.
    func stream(to writer: inout any ResponseBodyWriter, state: SimulatorState) async throws {
        var counted = false
        do {
            try await stream(to: &writer) { completed in
                counted = true
                if completed {
                    state.recordCompleted()
                } else {
                    state.recordFault()
                }
            }
        } catch {
            if !counted {
                state.recordCancelled()
            }
            throw error
        }
    }

    /// Writes the stream; calls `ending(false)` before writing an injected mid-stream error, `ending(true)` before
    /// writing the final chunk.
    private func stream(to writer: inout any ResponseBodyWriter, ending: (Bool) -> Void) async throws {
        let count = completion.completionTokens
        // "A few tokens" in, but never the whole answer, so the error is really mid-stream.
        let failAfter = midStreamError ? min(3, max(count - 1, 0)) : Int.max
        var json = JSONWriter(capacity: 256)
        if flavor == .openAI {
            OpenAIFormat.writeChunk(&json, id: id, created: created, model: model, content: nil, first: true)
        }
        let firstToken = start + promptDuration
        for index in 0..<count {
            if index == failAfter {
                break
            }
            let deadline = firstToken + tokenDuration * (index + 1)
            if deadline > .now {
                // Only sleep when the next token is due later; tokens already due go out in one write.
                if json.buffer.readableBytes > 0 {
                    try await writer.write(json.buffer)
                    json = JSONWriter(capacity: 256)
                }
                try await Task.sleep(until: deadline, clock: .continuous)
            }
            let token = completion.token(index)
            switch flavor {
            case .openAI:
                OpenAIFormat.writeChunk(&json, id: id, created: created, model: model, content: token)
            case .ollama:
                OllamaFormat.writeTokenLine(&json, model: model, content: token)
            }
        }
        if failAfter < count {
            let message = "an error was encountered while running the model: simulated mid-stream failure"
            switch flavor {
            case .openAI:
                OpenAIFormat.writeStreamError(&json, message: message)
            case .ollama:
                OllamaFormat.writeError(&json, message: message)
                json.raw("\n")
            }
            ending(false)
            try await writer.write(json.buffer)
            try await writer.finish(nil)
            return
        }
        let report = report(completionTokens: count)
        switch flavor {
        case .openAI:
            OpenAIFormat.writeChunk(&json, id: id, created: created, model: model, content: nil, finish: report)
            json.raw("data: [DONE]\n\n")
        case .ollama:
            OllamaFormat.writeDone(&json, model: model, content: "", report: report)
            json.raw("\n")
        }
        ending(true)
        try await writer.write(json.buffer)
        try await writer.finish(nil)
    }
}
