import Foundation
import LLMQHTTP
import LLMQWire

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

    /// Whether it is a llama-server, which tells its slot count.
    public var reportsSlots: Bool { propsURL != nil }

    /// llama-server's `total_slots` from `/props` (its `--parallel`).
    public func parallelSlots() async -> Int? {
        guard let propsURL else { return nil }
        let request = HTTPRequest(method: .get, url: propsURL, headers: poster.headers, body: nil, timeout: .seconds(5))
        guard let response = try? await poster.client.execute(request), response.status == 200,
            let props = try? JSONDecoder().decode(LlamaServerProps.self, from: Data(response.body)),
            let slots = props.totalSlots, (1...4096).contains(slots)
        else { return nil }
        return slots
    }

    public func shutdown() {
        poster.client.shutdown()
    }

    public func complete(_ request: ChatRequest) async throws(BackendError) -> ChatCompletion {
        let body = body(for: request)
        let response = try await poster.post(body)
        guard response.status == 200 else {
            throw backendError(status: response.status, body: response.body, retryAfter: response.header("retry-after"), backend: name)
        }
        let decoded: OpenAIAnswerReading.Whole
        do {
            decoded = try JSONDecoder().decode(OpenAIAnswerReading.Whole.self, from: Data(response.body))
        } catch {
            if let error = ErrorBody.parse(response.body), let message = error.message {
                throw BackendError(.serverError, "\(name) answered with an error: \(message)")
            }
            throw BackendError(.badResponse, "\(name) answered with something that is not a chat completion: \(error)")
        }
        guard let choice = decoded.choices.first else {
            throw BackendError(.badResponse, "\(name) answered with no choices")
        }
        var completion = ChatCompletion(
            content: choice.message?.content ?? "",
            finishReason: choice.finishReason,
            model: decoded.model ?? body.model,
            promptTokens: decoded.usage?.promptTokens,
            completionTokens: decoded.usage?.completionTokens,
            promptMilliseconds: decoded.timings?.promptMs,
            generationMilliseconds: decoded.timings?.predictedMs,
            tokensPerSecond: decoded.timings?.predictedPerSecond,
            backend: name
        )
        completion.cachedPromptTokens = decoded.timings?.cacheN
        return completion
    }

    /// Streams the answer as server-sent events: `data: {chunk}` events with deltas, the finish
    /// reason in the last choice, usage and timings in the last chunk (or one of their own), then
    /// `data: [DONE]`. An error event (`data: {"error": ...}`, or llama-server's `error: {...}`)
    /// fails the call as a server error, which may be retried.
    public func complete(_ request: ChatRequest, onText: @escaping @Sendable (String) -> Void) async throws(BackendError) -> ChatCompletion {
        var body = body(for: request)
        body.stream = true
        body.streamOptions = .init(includeUsage: true)
        let events = ServerSentEvents(completion: ChatCompletion(content: "", model: body.model, backend: name), onText: onText)
        let lines = StreamedLines { line throws(BackendError) in try events.line(line) }
        let head = try await poster.stream(body, into: lines)
        guard head.status == 200 else {
            throw backendError(status: head.status, body: lines.errorBody, retryAfter: head.header("retry-after"), backend: name)
        }
        try lines.finish()
        // Some servers end with the finish reason and no [DONE]; an answer with neither broke off.
        guard events.finished || events.completion.finishReason != nil else {
            throw BackendError(.badResponse, "\(name) ended its stream before the answer was finished")
        }
        return events.completion
    }

    /// A streamed answer being read: each `data:` line's chunk, on the HTTP client's thread.
    private final class ServerSentEvents {
        var completion: ChatCompletion
        var finished = false
        let onText: @Sendable (String) -> Void
        private let started = ContinuousClock.now
        private let decoder = JSONDecoder()

        init(completion: ChatCompletion, onText: @escaping @Sendable (String) -> Void) {
            self.completion = completion
            self.onText = onText
        }

        func line(_ line: ArraySlice<UInt8>) throws(BackendError) {
            let name = completion.backend
            // `data: ...`; a field without the space after the colon is valid SSE too.
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon != line.startIndex else { return }
            let field = line[..<colon]
            var value = line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
            if field.elementsEqual("error".utf8) {
                // llama-server's `error: {"code", "message", "type"}` line.
                let detail = (try? decoder.decode(OpenAIError.self, from: Data(value)))?.message
                throw BackendError(.serverError, "\(name) failed while generating: \(detail ?? String(decoding: value.prefix(300), as: UTF8.self))")
            }
            guard field.elementsEqual("data".utf8) else { return }
            if value.elementsEqual("[DONE]".utf8) {
                finished = true
                return
            }
            let chunk: OpenAIAnswerReading
            do {
                chunk = try decoder.decode(OpenAIAnswerReading.self, from: Data(value))
            } catch {
                throw BackendError(.badResponse, "\(name) sent an event that is not a chat completion chunk: \(String(decoding: value.prefix(200), as: UTF8.self))")
            }
            if let error = chunk.error {
                throw BackendError(.serverError, "\(name) failed while generating: \(error.message ?? "unknown error")")
            }
            if let model = chunk.model { completion.model = model }
            for choice in chunk.choices ?? [] {
                if let text = choice.delta?.content, !text.isEmpty {
                    if completion.firstTokenMilliseconds == nil {
                        completion.firstTokenMilliseconds = (ContinuousClock.now - started).fractionalMilliseconds
                    }
                    completion.content += text
                    onText(text)
                }
                if let reason = choice.finishReason { completion.finishReason = reason }
            }
            if let usage = chunk.usage {
                completion.promptTokens = usage.promptTokens ?? completion.promptTokens
                completion.completionTokens = usage.completionTokens ?? completion.completionTokens
            }
            if let timings = chunk.timings {
                completion.promptMilliseconds = timings.promptMs ?? completion.promptMilliseconds
                completion.cachedPromptTokens = timings.cacheN ?? completion.cachedPromptTokens
                completion.generationMilliseconds = timings.predictedMs ?? completion.generationMilliseconds
                completion.tokensPerSecond = timings.predictedPerSecond ?? completion.tokensPerSecond
            }
        }
    }

    /// The request body; it always says `"stream": false`, which streaming turns to true.
    private func body(for request: ChatRequest) -> OpenAIChatRequest {
        OpenAIChatRequest(
            model: request.model ?? defaultModel,
            messages: request.messages.map(ChatMessageBody.init),
            maxTokens: request.maxTokens,
            temperature: request.temperature,
            topP: request.topP,
            topK: sendsTopK ? request.topK : nil,
            seed: request.seed.map(Int64.init),
            stop: request.stop.isEmpty ? nil : StopSequences(request.stop),
            stream: false
        )
    }
}
