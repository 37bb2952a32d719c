import Foundation
import LLMQHTTP

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

    /// Posts and returns once the response has begun; its body is read as it arrives.
    func stream(_ body: some Encodable) async throws(BackendError) -> HTTPStreamingResponse {
        let request = try request(body)
        do {
            return try await client.stream(request)
        } catch {
            throw backendError(error)
        }
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

    /// Reads a streamed body line by line (`\n`, a trailing `\r` dropped), calling `handle`
    /// with each complete line; a last line without its newline is handled at the end.
    func readLines(
        of response: HTTPStreamingResponse, _ handle: (ArraySlice<UInt8>) throws(BackendError) -> Void
    ) async throws(BackendError) {
        var pending: [UInt8] = []
        func split(_ bytes: [UInt8]) throws(BackendError) {
            var start = bytes.startIndex
            while let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
                var line = bytes[start..<newline]
                if !pending.isEmpty {
                    pending += line
                    line = pending[...]
                    pending = []
                }
                if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
                try handle(line)
                start = newline + 1
            }
            pending += bytes[start...]
        }
        do {
            for try await piece in response.body { try split(piece) }
        } catch let error as BackendError {
            throw error
        } catch let error as HTTPClientError {
            throw backendError(error)
        } catch {
            throw BackendError(.unavailable, "\(error)")
        }
        if !pending.isEmpty {
            let last = pending
            pending = []
            try handle(last[...])
        }
    }
}

/// The `error` member of an error body, in any of the shapes servers use:
/// `{"error": "text"}` (Ollama) or `{"error": {"message", "type", "code"}}` (OpenAI, llama-server).
struct ErrorBody: Decodable {
    struct Detail: Decodable {
        var message: String?
        var type: String?
    }

    var message: String?
    var type: String?

    private enum CodingKeys: String, CodingKey { case error }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let text = try? container.decode(String.self, forKey: .error) {
            message = text
        } else if let detail = try? container.decode(Detail.self, forKey: .error) {
            message = detail.message
            type = detail.type
        }
    }

    static func parse(_ body: [UInt8]) -> ErrorBody? {
        try? JSONDecoder().decode(ErrorBody.self, from: Data(body))
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
