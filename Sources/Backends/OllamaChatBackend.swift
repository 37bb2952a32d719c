import Foundation
import LLMQHTTP

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

    struct Body: Encodable {
        struct Options: Encodable {
            var num_predict: Int?
            var temperature: Double?
            var top_p: Double?
            var top_k: Int?
            var seed: Int?
            var stop: [String]?
        }
        var model: String
        var messages: [ChatMessage]
        var stream = false
        var options: Options
    }

    struct Chunk: Decodable {
        struct Message: Decodable { var content: String? }
        var model: String?
        var message: Message?
        var done: Bool?
        var done_reason: String?
        var prompt_eval_count: Int?
        var eval_count: Int?
        var prompt_eval_duration: Double?
        var eval_duration: Double?
        var error: String?
    }

    public func shutdown() {
        poster.client.shutdown()
    }

    public func complete(_ request: ChatRequest) async throws(BackendError) -> ChatCompletion {
        guard let model = request.model ?? defaultModel else {
            throw BackendError(.rejected, "no model: Ollama needs one (set backend.model or the request's model field)")
        }
        let options = Body.Options(
            num_predict: request.maxTokens,
            temperature: request.temperature,
            top_p: request.topP,
            top_k: request.topK,
            seed: request.seed,
            stop: request.stop.isEmpty ? nil : request.stop
        )
        let response = try await poster.post(Body(model: model, messages: request.messages, options: options))
        guard response.status == 200 else {
            throw backendError(status: response.status, body: response.body, retryAfter: response.header("retry-after"), backend: name)
        }
        return try Self.parse(response.body, model: model, backend: name)
    }

    /// Parses one JSON object or an NDJSON stream of them.
    static func parse(_ body: [UInt8], model: String, backend: String) throws(BackendError) -> ChatCompletion {
        var content = ""
        var final: Chunk?
        let decoder = JSONDecoder()
        for line in body.split(separator: UInt8(ascii: "\n")) where !line.allSatisfy({ $0 == 32 || $0 == 13 }) {
            let chunk: Chunk
            do {
                chunk = try decoder.decode(Chunk.self, from: Data(line))
            } catch {
                throw BackendError(.badResponse, "\(backend) answered with a line that is not JSON: \(String(decoding: line.prefix(200), as: UTF8.self))")
            }
            if let error = chunk.error {
                throw BackendError(.serverError, "\(backend) failed while generating: \(error)")
            }
            content += chunk.message?.content ?? ""
            if chunk.done == true { final = chunk }
        }
        guard let final else {
            throw BackendError(.badResponse, "\(backend) ended its answer without a \"done\" message")
        }
        let generationMilliseconds = final.eval_duration.map { $0 / 1_000_000 }
        return ChatCompletion(
            content: content,
            finishReason: final.done_reason,
            model: final.model ?? model,
            promptTokens: final.prompt_eval_count,
            completionTokens: final.eval_count,
            promptMilliseconds: final.prompt_eval_duration.map { $0 / 1_000_000 },
            generationMilliseconds: generationMilliseconds,
            tokensPerSecond: zip(final.eval_count, generationMilliseconds).flatMap { count, ms in
                ms > 0 ? Double(count) * 1000 / ms : nil
            },
            backend: backend
        )
    }
}

private func zip<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}
