import Foundation
@testable import LLMQBackends
import LLMQHTTP
import LLMQSimulator
import Testing

@Suite("Ollama backend against the simulator's Ollama behaviours")
struct OllamaBackendTests {
    private func backend(_ sim: RunningSimulator, path: String, model: String = "llama3.2:1b") throws -> any ChatBackend {
        try makeChatBackend(
            BackendConfiguration(kind: .ollama, endpoint: sim.url + path, model: model, requestTimeout: .seconds(10)),
            maxConcurrentRequests: 4)
    }

    @Test(
        "busy (503), server errors (500) and unknown models, on the native and the OpenAI-compatible path",
        .withSimulator(.init(tokenMilliseconds: 0, models: ["llama3.2:1b"], strictModels: true)),
        arguments: ["", "/v1"])
    func errors(path: String) async throws {
        let sim = try SimulatorFixture.current
        let backend = try backend(sim, path: path)
        defer { backend.shutdown() }
        let request = ChatRequest(messages: [ChatMessage(role: .user, content: "hi")], maxTokens: 4)

        let ok = try await backend.complete(request)
        #expect(ok.completionTokens == 4)
        #expect(ok.finishReason == "length")

        try await sim.setFaults(SimulatorFaults(busyRate: 1))
        await #expect {
            try await backend.complete(request)
        } throws: { error in
            let error = error as? BackendError
            return error?.code == .busy && error?.status == 503 && error?.isTransient == true
                && error?.message.contains("server busy") == true
        }

        try await sim.setFaults(SimulatorFaults(failureRate: 1))
        await #expect {
            try await backend.complete(request)
        } throws: { error in
            (error as? BackendError)?.code == .serverError
        }

        try await sim.setFaults(SimulatorFaults())
        let missing = try self.backend(sim, path: path, model: "nope")
        defer { missing.shutdown() }
        await #expect {
            try await missing.complete(request)
        } throws: { error in
            let error = error as? BackendError
            return error?.code == .modelNotFound && error?.isTransient == false && error?.message.contains("not found") == true
        }
    }

    @Test("the queue limit (OLLAMA_MAX_QUEUE) answers 503, which llmq retries", .withSimulator(.init(slots: 1, tokenMilliseconds: 50, maxQueue: 1, models: ["llama3.2:1b"])))
    func queueLimit() async throws {
        let sim = try SimulatorFixture.current
        let backend = try backend(sim, path: "")
        defer { backend.shutdown() }
        let request = ChatRequest(messages: [ChatMessage(role: .user, content: "hi")], maxTokens: 10)
        let results = await withTaskGroup(of: Result<ChatCompletion, BackendError>.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    do { return .success(try await backend.complete(request)) } catch { return .failure((error as? BackendError) ?? BackendError(.badResponse, "\(error)")) }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let busy = results.filter { if case .failure(let error) = $0 { return error.code == .busy } else { return false } }
        #expect(busy.count == 2, "1 slot + 1 queued; the other two are refused with 503")
        #expect(results.count - busy.count == 2)
    }

    @Test("an NDJSON stream is read to its done line; an error line in the middle fails the request")
    func ndjson() throws {
        let stream = """
            {"model":"m","message":{"role":"assistant","content":"Hello"},"done":false}
            {"model":"m","message":{"role":"assistant","content":" world"},"done":false}
            {"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":7,"eval_count":2,"prompt_eval_duration":1000000,"eval_duration":4000000}

            """
        let completion = try OllamaChatBackend.parse(Array(stream.utf8), model: "m", backend: "ollama")
        #expect(completion.content == "Hello world")
        #expect(completion.finishReason == "stop")
        #expect(completion.promptTokens == 7)
        #expect(completion.completionTokens == 2)
        #expect(completion.generationMilliseconds == 4)
        #expect(completion.tokensPerSecond == 500)

        let broken = """
            {"model":"m","message":{"role":"assistant","content":"Hel"},"done":false}
            {"error":"an error was encountered while running the model"}

            """
        #expect {
            try OllamaChatBackend.parse(Array(broken.utf8), model: "m", backend: "ollama")
        } throws: { error in
            (error as? BackendError)?.code == .serverError && (error as? BackendError)?.message.contains("while running the model") == true
        }
        #expect(throws: BackendError.self) {
            try OllamaChatBackend.parse(Array(#"{"model":"m","message":{"content":"cut off"},"done":false}"#.utf8), model: "m", backend: "ollama")
        }
    }
}
