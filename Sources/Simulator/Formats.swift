import Hummingbird

/// What one finished (or finishing) generation reports, shared by both dialects' final objects.
struct GenerationReport: Sendable {
    var completion: Completion
    /// Prompt tokens the prompt cache held (llama-server's `cache_n`).
    var cachedTokens: Int
    /// Nominal prompt-processing time: (promptMilliseconds + uncached tokens × promptTokenMilliseconds) × slowFactor.
    var promptDuration: Duration
    /// Nominal generation time (tokens × tokenMilliseconds × slowFactor).
    var evalDuration: Duration
    /// Time spent waiting for a slot.
    var queueDuration: Duration
    /// From arrival of the request to now.
    var totalDuration: Duration
}

extension Duration {
    var nanosecondsInt64: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    var milliseconds: Double {
        Double(nanosecondsInt64) / 1_000_000
    }
}

/// JSON shapes of llama-server's OpenAI-compatible API.
enum OpenAIFormat {
    static let contentType = "application/json; charset=utf-8"
    static let streamContentType = "text/event-stream"

    /// `{"error":{"code":…,"message":…,"type":…}}`, the shape llama-server uses for every error.
    static func error(
        code: Int,
        type: StaticString,
        message: String,
        extra: (inout JSONWriter) -> Void = { _ in }
    ) -> ByteBuffer {
        var json = JSONWriter(capacity: 128 + message.utf8.count)
        json.beginObject()
        json.key("error")
        json.beginObject()
        json.field("code", code)
        json.field("message", message)
        json.field("type", String(describing: type))
        extra(&json)
        json.endObject()
        json.endObject()
        return json.buffer
    }

    /// The non-streaming `chat.completion` object.
    static func completion(id: String, created: Int64, model: String, report: GenerationReport) -> ByteBuffer {
        var json = JSONWriter(capacity: 640 + report.completion.text.utf8.count)
        json.beginObject()
        json.key("choices")
        json.beginArray()
        json.beginObject()
        json.field("finish_reason", report.completion.finishReason.rawValue)
        json.field("index", 0)
        json.key("message")
        json.beginObject()
        json.field("role", "assistant")
        json.field("content", report.completion.text)
        json.endObject()
        json.endObject()
        json.endArray()
        header(&json, id: id, created: created, model: model, object: "chat.completion")
        usageAndTimings(&json, report: report)
        json.endObject()
        return json.buffer
    }

    /// One SSE event `data: {chunk}` with a delta; `role` only in the first, `finish` only in the last.
    static func writeChunk(
        _ json: inout JSONWriter,
        id: String,
        created: Int64,
        model: String,
        content: Substring?,
        first: Bool = false,
        finish: GenerationReport? = nil
    ) {
        json.raw("data: ")
        json.beginObject()
        json.key("choices")
        json.beginArray()
        json.beginObject()
        json.key("finish_reason")
        if let finish {
            json.string(finish.completion.finishReason.rawValue)
        } else {
            json.null()
        }
        json.field("index", 0)
        json.key("delta")
        json.beginObject()
        if first {
            json.field("role", "assistant")
            json.key("content")
            json.null()
        } else if let content {
            json.field("content", content)
        }
        json.endObject()
        json.endObject()
        json.endArray()
        header(&json, id: id, created: created, model: model, object: "chat.completion.chunk")
        if let finish {
            usageAndTimings(&json, report: finish)
        }
        json.endObject()
        json.raw("\n\n")
    }

    /// An error event inside a stream, then the stream ends without `[DONE]`.
    static func writeStreamError(_ json: inout JSONWriter, message: String) {
        json.raw("data: ")
        json.beginObject()
        json.key("error")
        json.beginObject()
        json.field("code", 500)
        json.field("message", message)
        json.field("type", "server_error")
        json.endObject()
        json.endObject()
        json.raw("\n\n")
    }

    private static func header(_ json: inout JSONWriter, id: String, created: Int64, model: String, object: StaticString) {
        json.key("created")
        json.int64(created)
        json.field("model", model)
        json.field("system_fingerprint", "b0-llmq-sim")
        json.field("object", String(describing: object))
        json.field("id", id)
    }

    private static func usageAndTimings(_ json: inout JSONWriter, report: GenerationReport) {
        let completion = report.completion
        json.key("usage")
        json.beginObject()
        json.field("completion_tokens", completion.completionTokens)
        json.field("prompt_tokens", completion.promptTokens)
        json.field("total_tokens", completion.completionTokens + completion.promptTokens)
        json.key("prompt_tokens_details")
        json.beginObject()
        json.field("cached_tokens", report.cachedTokens)
        json.endObject()
        json.endObject()
        json.key("timings")
        json.beginObject()
        let promptMs = report.promptDuration.milliseconds
        let predictedMs = report.evalDuration.milliseconds
        // As llama-server: prompt_n counts the tokens processed, cache_n those the cache held.
        let processed = max(completion.promptTokens - report.cachedTokens, 0)
        json.field("cache_n", report.cachedTokens)
        json.field("prompt_n", processed)
        json.field("prompt_ms", promptMs)
        json.field("prompt_per_token_ms", perToken(promptMs, processed))
        json.field("prompt_per_second", perSecond(promptMs, processed))
        json.field("predicted_n", completion.completionTokens)
        json.field("predicted_ms", predictedMs)
        json.field("predicted_per_token_ms", perToken(predictedMs, completion.completionTokens))
        json.field("predicted_per_second", perSecond(predictedMs, completion.completionTokens))
        json.endObject()
    }

    private static func perToken(_ milliseconds: Double, _ tokens: Int) -> Double {
        tokens > 0 ? milliseconds / Double(tokens) : 0
    }

    /// 0 when no time passed: the real server would report infinity, which JSON cannot carry.
    private static func perSecond(_ milliseconds: Double, _ tokens: Int) -> Double {
        milliseconds > 0 ? Double(tokens) * 1000 / milliseconds : 0
    }
}

/// JSON shapes of Ollama's native API.
enum OllamaFormat {
    static let contentType = "application/json; charset=utf-8"
    static let streamContentType = "application/x-ndjson"

    /// `{"error":"…"}`, Ollama's error shape.
    static func error(_ message: String) -> ByteBuffer {
        var json = JSONWriter(capacity: 32 + message.utf8.count)
        writeError(&json, message: message)
        return json.buffer
    }

    /// `{"error":"…"}`, also as a line in the middle of a stream.
    static func writeError(_ json: inout JSONWriter, message: String) {
        json.beginObject()
        json.field("error", message)
        json.endObject()
    }

    /// One NDJSON line carrying a token.
    static func writeTokenLine(_ json: inout JSONWriter, model: String, content: Substring) {
        json.beginObject()
        json.field("model", model)
        json.field("created_at", WallTime.now().rfc3339)
        writeMessage(&json, content: content)
        json.field("done", false)
        json.endObject()
        json.raw("\n")
    }

    /// The final object: the whole message when not streaming, an empty one when streaming.
    static func writeDone(_ json: inout JSONWriter, model: String, content: Substring, report: GenerationReport) {
        json.beginObject()
        json.field("model", model)
        json.field("created_at", WallTime.now().rfc3339)
        writeMessage(&json, content: content)
        json.field("done_reason", report.completion.finishReason.rawValue)
        json.field("done", true)
        json.key("total_duration")
        json.int64(report.totalDuration.nanosecondsInt64)
        json.key("load_duration")
        json.int64(report.queueDuration.nanosecondsInt64)
        json.field("prompt_eval_count", report.completion.promptTokens)
        json.key("prompt_eval_duration")
        json.int64(report.promptDuration.nanosecondsInt64)
        json.field("eval_count", report.completion.completionTokens)
        json.key("eval_duration")
        json.int64(report.evalDuration.nanosecondsInt64)
        json.endObject()
    }

    /// What Ollama answers a chat request without messages: the model is loaded, nothing is generated.
    static func loadResponse(model: String) -> ByteBuffer {
        var json = JSONWriter()
        json.beginObject()
        json.field("model", model)
        json.field("created_at", WallTime.now().rfc3339)
        writeMessage(&json, content: "")
        json.field("done_reason", "load")
        json.field("done", true)
        json.endObject()
        return json.buffer
    }

    private static func writeMessage(_ json: inout JSONWriter, content: Substring) {
        json.key("message")
        json.beginObject()
        json.field("role", "assistant")
        json.field("content", content)
        json.endObject()
    }
}
