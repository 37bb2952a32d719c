import Foundation
import LLMQHTTP
import LLMQWire

/// What the OpenAI-compatible and the Ollama backends share: posting JSON, and turning
/// transport failures and HTTP statuses into ``BackendError``s.
struct JSONPoster: Sendable {
    let client: HTTPClient
    let url: String
    let headers: [(name: String, value: String)]
    let timeout: Duration

    init(client: HTTPClient, url: String, apiKey: String?, timeout: Duration) {
        self.client = client
        self.url = url
        var headers: [(name: String, value: String)] = [("Content-Type", "application/json"), ("Accept", "application/json")]
        if let apiKey, !apiKey.isEmpty { headers.append(("Authorization", "Bearer \(apiKey)")) }
        self.headers = headers
        self.timeout = timeout
    }

    func post(_ body: some Encodable) async throws(BackendError) -> HTTPResponse {
        let request = try request(body)
        do {
            return try await client.execute(request)
        } catch {
            throw backendError(error)
        }
    }

    /// Posts and hands the response body to `lines` as it arrives, line by line; returns the
    /// head when the body has ended. A line `lines` refuses stops the transfer with its error.
    func stream(_ body: some Encodable, into lines: StreamedLines) async throws(BackendError) -> HTTPResponseHead {
        let request = try request(body)
        let head: HTTPResponseHead
        do {
            head = try await client.execute(request) { head, piece in lines.receive(head, piece) }
        } catch {
            throw lines.failure ?? backendError(error)
        }
        if let failure = lines.failure { throw failure }
        return head
    }

    private func request(_ body: some Encodable) throws(BackendError) -> HTTPRequest {
        do {
            return HTTPRequest(method: .post, url: url, headers: headers, body: Array(try JSONEncoder().encode(body)), timeout: timeout)
        } catch {
            throw BackendError(.rejected, "could not encode the request: \(error)")
        }
    }

    /// A failed transfer as a backend error (also for one that fails midway through a stream).
    func backendError(_ error: HTTPClientError) -> BackendError {
        switch error.code {
        case .connect: BackendError(.unavailable, error.message)
        case .timeout: BackendError(.timeout, "no complete answer within \(timeout): \(error.message)")
        case .responseTooLarge: BackendError(.badResponse, error.message)
        case .invalidRequest: BackendError(.rejected, error.message)
        case .cancelled, .shutdown, .transport: BackendError(.unavailable, error.message)
        }
    }

}

/// A streamed response body split into lines (`\n`, a trailing `\r` dropped), each handed to
/// `handle` on the HTTP client's thread as soon as it is complete; a body with an error status
/// is kept instead (up to 64 KiB) to explain the error.
final class StreamedLines: @unchecked Sendable {
    // @unchecked: fed on the HTTP client's thread while the transfer runs, read by the caller
    // after it has ended (the transfer's end is the hand-over).
    private let handle: (ArraySlice<UInt8>) throws(BackendError) -> Void
    private var pending: [UInt8] = []
    private(set) var errorBody: [UInt8] = []
    /// Why `handle` refused a line; the transfer was stopped there.
    private(set) var failure: BackendError?

    init(_ handle: @escaping (ArraySlice<UInt8>) throws(BackendError) -> Void) {
        self.handle = handle
    }

    /// Takes one piece of the body; false stops the transfer.
    func receive(_ head: HTTPResponseHead, _ piece: UnsafeRawBufferPointer) -> Bool {
        guard head.status == 200 else {
            errorBody += piece.prefix(max(0, (64 << 10) - errorBody.count))
            return true
        }
        do {
            var start = piece.startIndex
            while let newline = piece[start...].firstIndex(of: UInt8(ascii: "\n")) {
                var line = pending.isEmpty ? Array(piece[start..<newline])[...] : (pending + piece[start..<newline])[...]
                pending.removeAll(keepingCapacity: true)
                if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
                try handle(line)
                start = newline + 1
            }
            pending += piece[start...]
            return true
        } catch {
            failure = error
            return false
        }
    }

    /// Handles a last line that had no newline; call once the body has ended.
    func finish() throws(BackendError) {
        guard !pending.isEmpty else { return }
        let last = pending
        pending = []
        try handle(last[...])
    }
}

/// The message and type of an error body, in either shape servers use: Ollama's
/// `{"error": "text"}` or `{"error": {"message", "type", "code"}}` (OpenAI, llama-server).
struct ErrorBody {
    var message: String?
    var type: String?

    /// Nil when the body is neither shape.
    static func parse(_ body: [UInt8]) -> ErrorBody? {
        let decoder = JSONDecoder()
        let data = Data(body)
        if let ollama = try? decoder.decode(OllamaErrorBody.self, from: data) {
            return ErrorBody(message: ollama.error)
        }
        if let openAI = try? decoder.decode(OpenAIErrorBody.self, from: data) {
            return ErrorBody(message: openAI.error.message, type: openAI.error.type)
        }
        return nil
    }
}

/// Classifies an HTTP error status and body from any of the supported servers.
func backendError(status: Int, body: [UInt8], retryAfter: String?, backend: String) -> BackendError {
    let parsed = ErrorBody.parse(body)
    let detail = parsed?.message ?? String(decoding: body.prefix(300), as: UTF8.self)
    let message = "\(backend) answered HTTP \(status): \(detail)"
    let retryAfter = retryAfter.flatMap(parseRetryAfter)
    if parsed?.type == "exceed_context_size_error" || detail.contains("exceeds the available context size")
        || detail.contains("context length") && status == 400
    {
        return BackendError(.contextExceeded, message, status: status)
    }
    switch status {
    case 404 where detail.contains("model"):
        return BackendError(.modelNotFound, message, status: status)
    case 429, 503:
        return BackendError(.busy, message, status: status, retryAfter: retryAfter)
    case 408, 504:
        return BackendError(.timeout, message, status: status)
    case 500...:
        return BackendError(.serverError, message, status: status)
    default:
        return BackendError(.rejected, message, status: status)
    }
}

/// The longest `Retry-After` honoured; the retry policy caps the wait further (`retry.maxBackoffMs`).
let maxRetryAfter: Duration = .seconds(3600)

/// A `Retry-After` header as delta-seconds (`120`, also `1.5` as some servers send it), at most
/// ``maxRetryAfter``. Anything else is nil: negative, NaN, infinite or not a number (an HTTP
/// date is ignored too), so a hostile or broken server can neither trap nor stall a worker.
func parseRetryAfter(_ value: String) -> Duration? {
    let trimmed = value.trimmingCharacters(in: .whitespaces)
    guard trimmed.utf8.count <= 32, let seconds = Double(trimmed), seconds.isFinite, seconds >= 0 else { return nil }
    let capped = min(seconds, Double(maxRetryAfter.components.seconds))
    return .milliseconds(Int64((capped * 1000).rounded(.up)))
}

extension Duration {
    /// Milliseconds as a fraction, for reply timings.
    public var fractionalMilliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

extension ChatMessageBody {
    /// A backend-neutral message as both APIs carry it: `{"role": "user", "content": "text"}`.
    init(_ message: ChatMessage) {
        self.init(role: message.role.rawValue, text: message.content)
    }
}
