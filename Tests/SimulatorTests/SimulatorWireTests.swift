import Foundation
import HummingbirdTesting
import LLMQWire
import Testing

@testable import LLMQSimulator

/// The simulator writes its answers by hand (see `JSONWriter`); these decode them with the wire types the
/// backends use, so the two cannot drift apart.
@Suite("Simulator answers in the wire types", .withSimulator)
struct SimulatorWireTests {
    private func decode<T: Decodable>(_ type: T.Type, _ text: some StringProtocol) throws -> T {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }

    private func encoded(_ value: some Encodable) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    @Test func openAIAnswersDecode() async throws {
        let client = try SimulatorFixture.current
        let request = OpenAIChatRequest(
            model: "sim", messages: [ChatMessageBody(role: "user", text: "hi")], maxTokens: 3, temperature: 0.5,
            topK: 40, seed: .max, stop: ["never"], stream: false
        )
        let whole = try decode(OpenAIChatResponse.self, try await client.post("/v1/chat/completions", encoded(request)).text)
        #expect(whole.choices.first?.finishReason == "length")
        #expect(whole.usage?.completionTokens == 3)
        #expect(whole.timings?.predictedN == 3)

        var streaming = request
        streaming.stream = true
        streaming.streamOptions = .init(includeUsage: true)
        let events = try await client.post("/v1/chat/completions", encoded(streaming)).text
            .split(separator: "\n").filter { $0.hasPrefix("data: ") && $0 != "data: [DONE]" }
        let chunks = try events.map { try decode(OpenAIChatChunk.self, $0.dropFirst(6)) }
        #expect(chunks.first?.choices?.first?.delta?.role == "assistant")
        let text = chunks.compactMap { $0.choices?.first?.delta?.content }.joined()
        #expect(text == whole.choices.first?.message?.content)
        #expect(chunks.last?.choices?.first?.finishReason == "length")
        #expect(chunks.last?.usage?.completionTokens == 3)

        let refused = try await client.post("/v1/chat/completions", #"{"messages":[{"role":"user","content":"hi"}],"top_k":1.5}"#)
        #expect(refused.status == .badRequest)
        #expect(try decode(OpenAIErrorBody.self, refused.text).error.type == "invalid_request_error")
    }

    @Test func ollamaAnswersDecode() async throws {
        let client = try SimulatorFixture.current
        let request = OllamaChatRequest(
            model: "sim", messages: [ChatMessageBody(role: "user", text: "hi")], stream: false,
            options: OllamaOptions(numPredict: 3, topK: 0, seed: .min)
        )
        let whole = try decode(OllamaChatResponse.self, try await client.post("/api/chat", encoded(request)).text)
        #expect(whole.done == true && whole.doneReason == "length" && whole.evalCount == 3)
        #expect(whole.evalDuration != nil && whole.promptEvalDuration != nil)

        var streaming = request
        streaming.stream = true
        let lines = try await client.post("/api/chat", encoded(streaming)).text.split(separator: "\n")
        let objects = try lines.map { try decode(OllamaChatResponse.self, $0) }
        #expect(objects.compactMap { $0.message?.content }.joined() == whole.message?.content)
        #expect(objects.last?.done == true && objects.last?.evalCount == 3)

        let missing = try await client.post("/api/chat", #"{"model":"nope","messages":[]}"#)
        #expect(missing.status == .notFound)
        #expect(try decode(OllamaErrorBody.self, missing.text).error.contains("not found"))
    }

    @Test func serverInfoDecodes() async throws {
        let client = try SimulatorFixture.current
        let props = try decode(LlamaServerProps.self, try await client.get("/props").text)
        #expect(props.totalSlots != nil)
        let models = try decode(OpenAIModelList.self, try await client.get("/v1/models").text)
        #expect(models.data.first?.id == "sim")
        let tags = try decode(OllamaTagList.self, try await client.get("/api/tags").text)
        #expect(tags.models.first?.name == "sim:latest")
    }
}
