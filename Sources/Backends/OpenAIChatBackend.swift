import Foundation
import LLMQHTTP

/// A backend speaking the OpenAI chat completions API: llama-server, vLLM, LM Studio, OpenAI,
/// and Ollama's compatibility endpoint.
public struct OpenAIChatBackend: ChatBackend {
    public let name: String
    private let poster: JSONPoster
    private let defaultModel: String?
    /// `top_k` is not part of OpenAI's API (OpenAI rejects unknown arguments); llama-server and
    /// Ollama accept it.
    private let sendsTopK: Bool

    /// llama-server's `/props`, which tells its slot count; nil for other servers.
    private let propsURL: String?

    public init(name: String, url: String, configuration: BackendConfiguration, client: HTTPClient) {
        self.name = name
        self.poster = JSONPoster(client: client, url: url, apiKey: configuration.apiKey, timeout: configuration.requestTimeout)
        let suffix = "/v1/chat/completions"
        self.propsURL = configuration.kind == .llamaCpp && url.hasSuffix(suffix) ? String(url.dropLast(suffix.count)) + "/props" : nil
        self.defaultModel = configuration.model
        self.sendsTopK = configuration.kind != .openAI
    }

    struct Body: Encodable {
        var model: String?
        var messages: [ChatMessage]
        var max_tokens: Int?
        var temperature: Double?
        var top_p: Double?
        var top_k: Int?
        var seed: Int?
        var stop: [String]?
        var stream = false
    }

    struct Response: Decodable {
        struct Choice: Decodable {
            struct Message: Decodable { var content: String? }
            var message: Message?
            var finish_reason: String?
        }
        struct Usage: Decodable {
            var prompt_tokens: Int?
            var completion_tokens: Int?
        }
        /// llama-server's own addition to the OpenAI response.
        struct Timings: Decodable {
            var prompt_ms: Double?
            var predicted_ms: Double?
            var predicted_per_second: Double?
        }
        var model: String?
        var choices: [Choice]
        var usage: Usage?
        var timings: Timings?
    }

    /// Whether it is a llama-server, which tells its slot count.
    public var reportsSlots: Bool { propsURL != nil }

    /// llama-server's `total_slots` from `/props` (its `--parallel`).
    public func parallelSlots() async -> Int? {
        guard let propsURL else { return nil }
        struct Props: Decodable { var total_slots: Int? }
        let request = HTTPRequest(method: .get, url: propsURL, headers: poster.headers, body: nil, timeout: .seconds(5))
        guard let response = try? await poster.client.execute(request), response.status == 200,
            let props = try? JSONDecoder().decode(Props.self, from: Data(response.body)),
            let slots = props.total_slots, (1...4096).contains(slots)
        else { return nil }
        return slots
    }

    public func shutdown() {
        poster.client.shutdown()
    }

    public func complete(_ request: ChatRequest) async throws(BackendError) -> ChatCompletion {
        let body = Body(
            model: request.model ?? defaultModel,
            messages: request.messages,
            max_tokens: request.maxTokens,
            temperature: request.temperature,
            top_p: request.topP,
            top_k: sendsTopK ? request.topK : nil,
            seed: request.seed,
            stop: request.stop.isEmpty ? nil : request.stop
        )
        let response = try await poster.post(body)
        guard response.status == 200 else {
            throw backendError(status: response.status, body: response.body, retryAfter: response.header("retry-after"), backend: name)
        }
        let decoded: Response
        do {
            decoded = try JSONDecoder().decode(Response.self, from: Data(response.body))
        } catch {
            if let error = ErrorBody.parse(response.body), let message = error.message {
                throw BackendError(.serverError, "\(name) answered with an error: \(message)")
            }
            throw BackendError(.badResponse, "\(name) answered with something that is not a chat completion: \(error)")
        }
        guard let choice = decoded.choices.first else {
            throw BackendError(.badResponse, "\(name) answered with no choices")
        }
        return ChatCompletion(
            content: choice.message?.content ?? "",
            finishReason: choice.finish_reason,
            model: decoded.model ?? body.model,
            promptTokens: decoded.usage?.prompt_tokens,
            completionTokens: decoded.usage?.completion_tokens,
            promptMilliseconds: decoded.timings?.prompt_ms,
            generationMilliseconds: decoded.timings?.predicted_ms,
            tokensPerSecond: decoded.timings?.predicted_per_second,
            backend: name
        )
    }
}
