import Foundation
import LLMQHTTP
import LLMQWire

/// A backend speaking Ollama's native `POST /api/chat`.
///
/// It asks for `"stream": false`, but also reads an NDJSON stream (what Ollama sends by default,
/// and what some proxies force), including an `{"error": ...}` line in the middle of one.
public struct OllamaChatBackend: ChatBackend {
    public let name: String
    private let poster: JSONPoster
    private let defaultModel: String?

    public init(name: String, url: String, configuration: BackendConfiguration, client: HTTPClient) {
        self.name = name
        self.poster = JSONPoster(client: client, url: url, apiKey: configuration.apiKey, timeout: configuration.requestTimeout)
        self.defaultModel = configuration.model
    }

    public func shutdown() {
        poster.client.shutdown()
    }

    public func complete(_ request: ChatRequest) async throws(BackendError) -> ChatCompletion {
        let body = try body(for: request, stream: false)
        let response = try await poster.post(body)
        guard response.status == 200 else {
            throw backendError(status: response.status, body: response.body, retryAfter: response.header("retry-after"), backend: name)
        }
        return try Self.parse(response.body, model: model(of: body), backend: name)
    }

    /// Streams the answer as NDJSON: one `{"message": {"content": ...}}` line per piece, then a
    /// line with `"done": true` and the counts and durations; an `{"error": ...}` line fails the
    /// call as a server error, which may be retried.
    public func complete(_ request: ChatRequest, onText: @escaping @Sendable (String) -> Void) async throws(BackendError) -> ChatCompletion {
        let body = try body(for: request, stream: true)
        let answer = StreamedAnswer(Answer(model: model(of: body), backend: name))
        let lines = StreamedLines { line throws(BackendError) in
            guard let text = try answer.answer.add(line), !text.isEmpty else { return }
            if answer.answer.firstTokenMilliseconds == nil {
                answer.answer.firstTokenMilliseconds = (ContinuousClock.now - answer.started).fractionalMilliseconds
            }
            onText(text)
        }
        let head = try await poster.stream(body, into: lines)
        guard head.status == 200 else {
            throw backendError(status: head.status, body: lines.errorBody, retryAfter: head.header("retry-after"), backend: name)
        }
        try lines.finish()
        return try answer.answer.completion()
    }

    /// An answer read on the HTTP client's thread as it arrives.
    private final class StreamedAnswer {
        var answer: Answer
        let started = ContinuousClock.now

        init(_ answer: Answer) {
            self.answer = answer
        }
    }

    private func body(for request: ChatRequest, stream: Bool) throws(BackendError) -> OllamaChatRequest {
        guard let model = request.model ?? defaultModel else {
            throw BackendError(.rejected, "no model: Ollama needs one (set backend.model or the request's model field)")
        }
        let options = OllamaOptions(
            numPredict: request.maxTokens,
            temperature: request.temperature,
            topP: request.topP,
            topK: request.topK,
            seed: request.seed.map(Int64.init),
            stop: request.stop.isEmpty ? nil : StopSequences(request.stop)
        )
        // `options` goes out even when empty (`"options":{}`), as it always has.
        return OllamaChatRequest(model: model, messages: request.messages.map(ChatMessageBody.init), stream: stream, options: options)
    }

    /// The model a body built by ``body(for:stream:)`` names (it always names one).
    private func model(of body: OllamaChatRequest) -> String {
        body.model ?? ""
    }

    /// Parses one JSON object or an NDJSON stream of them.
    static func parse(_ body: [UInt8], model: String, backend: String) throws(BackendError) -> ChatCompletion {
        var answer = Answer(model: model, backend: backend)
        for line in body.split(separator: UInt8(ascii: "\n")) {
            _ = try answer.add(line)
        }
        return try answer.completion()
    }

    /// An answer read line by line, whole or streamed.
    struct Answer {
        var model: String
        var backend: String
        var content = ""
        var final: OllamaChatResponse?
        var firstTokenMilliseconds: Double?
        private let decoder = JSONDecoder()

        init(model: String, backend: String) {
            self.model = model
            self.backend = backend
        }

        /// Adds one line; returns its text.
        mutating func add(_ line: ArraySlice<UInt8>) throws(BackendError) -> String? {
            guard !line.allSatisfy({ $0 == 32 || $0 == 13 }) else { return nil }
            let chunk: OllamaChatResponse
            do {
                chunk = try decoder.decode(OllamaChatResponse.self, from: Data(line))
            } catch {
                throw BackendError(.badResponse, "\(backend) answered with a line that is not JSON: \(String(decoding: line.prefix(200), as: UTF8.self))")
            }
            if let error = chunk.error {
                throw BackendError(.serverError, "\(backend) failed while generating: \(error)")
            }
            let text = chunk.message?.content
            content += text ?? ""
            if chunk.done == true { final = chunk }
            return text
        }

        func completion() throws(BackendError) -> ChatCompletion {
            guard let final else {
                throw BackendError(.badResponse, "\(backend) ended its answer without a \"done\" message")
            }
            let generationMilliseconds = final.evalDuration.map { Double($0) / 1_000_000 }
            return ChatCompletion(
                content: content,
                finishReason: final.doneReason,
                model: final.model ?? model,
                promptTokens: final.promptEvalCount,
                completionTokens: final.evalCount,
                promptMilliseconds: final.promptEvalDuration.map { Double($0) / 1_000_000 },
                generationMilliseconds: generationMilliseconds,
                tokensPerSecond: zip(final.evalCount, generationMilliseconds).flatMap { count, ms in
                    ms > 0 ? Double(count) * 1000 / ms : nil
                },
                firstTokenMilliseconds: firstTokenMilliseconds,
                backend: backend
            )
        }
    }
}

private func zip<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}
