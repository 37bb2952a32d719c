import Foundation
import LLMQBackends

/// The fields of a reply entry, in the order the README documents them.
package struct Reply {
    package var fields: [(String, String)] = []
    /// `ok` or `error`, as in the `status` field.
    package var status = ""
    /// The `error_code` field of an error reply; empty for `ok`.
    package var errorCode = ""
    /// The backend named in the reply (the one that answered, or that failed); empty when the
    /// request never reached one (rejected, dead-lettered).
    package var backend = ""

    package mutating func add(_ name: String, _ value: String?) {
        if let value { fields.append((name, value)) }
    }

    package mutating func add(_ name: String, _ value: Int?) {
        if let value { fields.append((name, String(value))) }
    }

    package mutating func add(_ name: String, milliseconds value: Double?) {
        if let value { fields.append((name, formatMilliseconds(value))) }
    }

    /// The head every reply starts with: the caller's `id` (else the entry ID), the request's
    /// entry ID, and the status.
    package static func head(callerID: String?, entryID: String, status: String) -> Reply {
        var reply = Reply()
        reply.add("id", callerID ?? entryID)
        reply.add("request", entryID)
        reply.add("status", status)
        reply.status = status
        return reply
    }

    package static func success(
        callerID: String?, entryID: String, completion: ChatCompletion, attempts: Int
    ) -> Reply {
        var reply = head(callerID: callerID, entryID: entryID, status: "ok")
        reply.add("content", completion.content)
        reply.add("finish_reason", completion.finishReason ?? "")
        reply.add("model", completion.model ?? "")
        reply.add("backend", completion.backend)
        reply.backend = completion.backend
        reply.add("prompt_tokens", completion.promptTokens)
        reply.add("completion_tokens", completion.completionTokens)
        reply.add("prompt_ms", milliseconds: completion.promptMilliseconds)
        reply.add("cached_tokens", completion.cachedPromptTokens)
        reply.add("generation_ms", milliseconds: completion.generationMilliseconds)
        if let rate = completion.tokensPerSecond { reply.add("tokens_per_second", formatDecimal(rate, places: 2)) }
        reply.add("first_token_ms", milliseconds: completion.firstTokenMilliseconds)
        reply.add("attempts", attempts)
        return reply
    }

    package static func error(callerID: String?, entryID: String, code: String, message: String, backend: String? = nil, attempts: Int? = nil) -> Reply {
        var reply = head(callerID: callerID, entryID: entryID, status: "error")
        reply.add("error_code", code)
        reply.errorCode = code
        reply.add("error", message)
        reply.add("backend", backend)
        reply.backend = backend ?? ""
        reply.add("attempts", attempts)
        return reply
    }

    /// The fields every reply ends with.
    package mutating func addTimings(consumer: String, queueMilliseconds: Double?, backendMilliseconds: Double?, totalMilliseconds: Double) {
        add("consumer", consumer)
        add("queue_ms", milliseconds: queueMilliseconds.map { max(0, $0) })
        add("backend_ms", milliseconds: backendMilliseconds ?? 0)
        add("total_ms", milliseconds: totalMilliseconds)
    }
}

/// Milliseconds with microsecond resolution: llmq's own overhead is well below one millisecond.
package func formatMilliseconds(_ value: Double) -> String {
    formatDecimal(value, places: 3)
}

/// `value` with a fixed number of decimals, like `String(format: "%.3f")` without its cost
/// (it was several percent of a worker's CPU at thousands of replies per second).
package func formatDecimal(_ value: Double, places: Int) -> String {
    guard value.isFinite, abs(value) < 1e15 else { return String(value) }
    var scale: Int64 = 1
    for _ in 0..<places { scale *= 10 }
    let scaled = Int64((abs(value) * Double(scale)).rounded())
    let whole = String(scaled / scale)
    var fraction = String(scaled % scale)
    if fraction.count < places { fraction = String(repeating: "0", count: places - fraction.count) + fraction }
    return (value < 0 && scaled != 0 ? "-" : "") + whole + (places > 0 ? "." + fraction : "")
}
