import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ServiceLifecycle
import Testing

@testable import LLMQSimulator

@Suite("llama-server API", .withSimulator)
struct OpenAIAPITests {
    @Test func completionHasLlamaServerShape() async throws {
        let client = try SimulatorFixture.current
        let response = try await client.post("/v1/chat/completions", openAIBody(maxTokens: 5))
        #expect(response.status == .ok)
        #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
        let object = try json(response)
        #expect((object["id"] as? String)?.hasPrefix("chatcmpl-") == true)
        #expect(object["object"] as? String == "chat.completion")
        #expect(object["created"] is Int)
        #expect(object["model"] as? String == "sim")
        let choice = try #require((object["choices"] as? [[String: Any]])?.first)
        #expect(choice["index"] as? Int == 0)
        #expect(choice["finish_reason"] as? String == "length")
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["role"] as? String == "assistant")
        let content = try #require(message["content"] as? String)
        #expect(content.split(separator: " ").count == 5)
        let usage = try #require(object["usage"] as? [String: Any])
        #expect(usage["completion_tokens"] as? Int == 5)
        // 2 messages × 4 + "You are terse." (3) + "Say something" (2)
        #expect(usage["prompt_tokens"] as? Int == 13)
        #expect(usage["total_tokens"] as? Int == 18)
        let timings = try #require(object["timings"] as? [String: Any])
        for key in ["prompt_n", "predicted_n"] {
            #expect(timings[key] is Int, "\(key)")
        }
        for key in ["prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_ms",
                    "predicted_per_token_ms", "predicted_per_second"] {
            #expect(timings[key] is Double || timings[key] is Int, "\(key)")
        }
    }

    @Test func contentIsDeterministic() async throws {
        let client = try SimulatorFixture.current
        func content(_ body: String) async throws -> String {
            let object = try json(try await client.post("/chat/completions", body))
            let choice = (object["choices"] as? [[String: Any]])?.first
            return (choice?["message"] as? [String: Any])?["content"] as? String ?? ""
        }
        let first = try await content(openAIBody("hello there", seed: 7))
        let second = try await content(openAIBody("hello there", seed: 7))
        let otherPrompt = try await content(openAIBody("something else", seed: 7))
        #expect(!first.isEmpty)
        #expect(first == second)
        #expect(first != otherPrompt)
        // No limit in the request: default length, and the model "stopped" by itself.
        #expect(first.split(separator: " ").count == 16)
    }

    @Test func streamingSendsChunksThenDone() async throws {
        let client = try SimulatorFixture.current
        let plain = try json(try await client.post("/v1/chat/completions", openAIBody(maxTokens: 6)))
        let expected = ((plain["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String

        let response = try await client.post("/v1/chat/completions", openAIBody(maxTokens: 6, stream: true))
        #expect(response.status == .ok)
        #expect(response.headers[.contentType] == "text/event-stream")
        let events = response.text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        #expect(events.allSatisfy { $0.hasPrefix("data: ") })
        #expect(events.last == "data: [DONE]")
        let chunks = try events.dropLast().map { try json($0.dropFirst("data: ".count)) }
        #expect(chunks.count == 1 + 6 + 1)
        #expect(chunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
        var streamed = ""
        for chunk in chunks {
            let delta = (chunk["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]
            streamed += delta?["content"] as? String ?? ""
        }
        #expect(streamed == expected)
        let last = try #require(chunks.last)
        #expect((last["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String == "length")
        #expect((last["usage"] as? [String: Any])?["completion_tokens"] as? Int == 6)
    }

    @Test func malformedJSONIsBadRequest() async throws {
        let client = try SimulatorFixture.current
        let response = try await client.post("/v1/chat/completions", #"{"messages": [oops"#)
        #expect(response.status == .badRequest)
        let error = try #require(try json(response)["error"] as? [String: Any])
        #expect(error["code"] as? Int == 400)
        #expect(error["type"] as? String == "invalid_request_error")
        #expect((error["message"] as? String)?.contains("invalid JSON") == true)

        let noMessages = try await client.post("/v1/chat/completions", #"{"model":"sim"}"#)
        #expect(noMessages.status == .badRequest)
        #expect(noMessages.text.contains("messages"))

        let badMessage = try await client.post("/v1/chat/completions", #"{"messages":[{"content":"hi"}]}"#)
        #expect(badMessage.status == .badRequest)
        #expect(badMessage.text.contains("role"))

        let stats = try await client.stats()
        #expect(stats["requests"] as? Int == 3)
        #expect(stats["invalid"] as? Int == 3)
    }

    @Test(.withSimulator(.init(tokenMilliseconds: 0, contextSize: 50))) func contextTooLargeIsExceedContextSizeError() async throws {
        let client = try SimulatorFixture.current
        let response = try await client.post("/v1/chat/completions", openAIBody(maxTokens: 40))
        #expect(response.status == .badRequest)
        let error = try #require(try json(response)["error"] as? [String: Any])
        #expect(error["type"] as? String == "exceed_context_size_error")
        #expect(error["n_ctx"] as? Int == 50)
        #expect(error["n_prompt_tokens"] as? Int == 13)

        let fits = try await client.post("/v1/chat/completions", openAIBody(maxTokens: 37))
        #expect(fits.status == .ok)
    }

    @Test(.withSimulators(.init(tokenMilliseconds: 0), .init(tokenMilliseconds: 0, strictModels: true)))
    func modelNameIsIgnoredUnlessStrict() async throws {
        let (lenient, strict) = try SimulatorFixture.pair
        let response = try await lenient.post("/v1/chat/completions", openAIBody(model: "gpt-4o", maxTokens: 2))
        #expect(response.status == .ok)
        #expect(try json(response)["model"] as? String == "gpt-4o")

        let refused = try await strict.post("/v1/chat/completions", openAIBody(model: "gpt-4o", maxTokens: 2))
        #expect(refused.status == .notFound)
        let error = try #require(try json(refused)["error"] as? [String: Any])
        #expect((error["message"] as? String)?.contains("gpt-4o") == true)
        #expect(error["type"] as? String == "not_found_error")
        let tagged = try await strict.post("/v1/chat/completions", openAIBody(model: "sim:latest", maxTokens: 2))
        #expect(tagged.status == .ok)
    }

    @Test(.withSimulator(.init(slots: 3, tokenMilliseconds: 0))) func healthSlotsAndUnknownPaths() async throws {
        let client = try SimulatorFixture.current
        let health = try await client.get("/health")
        #expect(health.status == .ok)
        #expect(try json(health)["status"] as? String == "ok")

        let slots = try await client.get("/slots")
        let array = try #require(try JSONSerialization.jsonObject(with: Data(slots.text.utf8)) as? [[String: Any]])
        #expect(array.count == 3)
        #expect(array.map { $0["id"] as? Int } == [0, 1, 2])
        #expect(array.allSatisfy { $0["is_processing"] as? Bool == false })

        let missing = try await client.get("/v2/nothing")
        #expect(missing.status == .notFound)
        let missingOllama = try await client.get("/api/nothing")
        #expect(missingOllama.status == .notFound)
        #expect(missingOllama.text == "404 page not found")
    }
}

@Suite("Ollama API", .withSimulator)
struct OllamaAPITests {
    @Test func streamingIsNDJSONEndingInDone() async throws {
        let client = try SimulatorFixture.current
        let response = try await client.post("/api/chat", ollamaBody(numPredict: 4))
        #expect(response.status == .ok)
        #expect(response.headers[.contentType] == "application/x-ndjson")
        let lines = try response.text.split(separator: "\n").map { try json($0) }
        #expect(lines.count == 5)
        for line in lines.dropLast() {
            #expect(line["done"] as? Bool == false)
            #expect(line["model"] as? String == "sim")
            #expect((line["created_at"] as? String)?.hasSuffix("Z") == true)
            let message = line["message"] as? [String: Any]
            #expect(message?["role"] as? String == "assistant")
            #expect((message?["content"] as? String)?.isEmpty == false)
        }
        let done = try #require(lines.last)
        #expect(done["done"] as? Bool == true)
        #expect(done["done_reason"] as? String == "length")
        #expect(done["eval_count"] as? Int == 4)
        #expect(done["prompt_eval_count"] as? Int == 6)
        for key in ["total_duration", "load_duration", "prompt_eval_duration", "eval_duration"] {
            #expect(done[key] is Int, "\(key)")
        }
        #expect((done["message"] as? [String: Any])?["content"] as? String == "")
    }

    @Test func nonStreamingIsOneObject() async throws {
        let client = try SimulatorFixture.current
        let response = try await client.post("/api/chat", ollamaBody(stream: false))
        #expect(response.status == .ok)
        #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
        let object = try json(response)
        #expect(object["done"] as? Bool == true)
        #expect(object["done_reason"] as? String == "stop")
        #expect(object["eval_count"] as? Int == 16)
        let content = (object["message"] as? [String: Any])?["content"] as? String
        #expect(content?.split(separator: " ").count == 16)

        // The stream carries the same text, token by token.
        let streamed = try await client.post("/api/chat", ollamaBody())
        let pieces = try streamed.text.split(separator: "\n").map {
            (try json($0)["message"] as? [String: Any])?["content"] as? String ?? ""
        }
        #expect(pieces.joined() == content)
    }

    @Test func unknownModelIsNotFound() async throws {
        let client = try SimulatorFixture.current
        let response = try await client.post("/api/chat", ollamaBody(model: "llama3"))
        #expect(response.status == .notFound)
        #expect(try json(response)["error"] as? String == #"model "llama3" not found, try pulling it first"#)
        let tagged = try await client.post("/api/chat", ollamaBody(model: "sim:latest", stream: false))
        #expect(tagged.status == .ok)
    }

    @Test func malformedJSONIsBadRequest() async throws {
        let client = try SimulatorFixture.current
        let response = try await client.post("/api/chat", "not json")
        #expect(response.status == .badRequest)
        #expect(try json(response)["error"] is String)
    }

    @Test(.withSimulator(.init(tokenMilliseconds: 0, models: ["sim", "tiny:1b"]))) func tagsAndVersion() async throws {
        let client = try SimulatorFixture.current
        let tags = try json(try await client.get("/api/tags"))
        let models = try #require(tags["models"] as? [[String: Any]])
        #expect(models.map { $0["name"] as? String } == ["sim:latest", "tiny:1b"])
        #expect(models.allSatisfy { ($0["digest"] as? String)?.count == 64 && $0["details"] is [String: Any] })
        let version = try json(try await client.get("/api/version"))
        #expect(version["version"] as? String == "0.12.0")
    }
}

/// Timing and accounting tests; serialized so they do not compete for the two CPU cores.
@Suite("Slots, queue and faults", .serialized)
struct SchedulingTests {
    @Test(.withSimulator(.init(slots: 2, tokenMilliseconds: 0, promptMilliseconds: 300))) func slotsLimitParallelism() async throws {
        let client = try SimulatorFixture.current
        let elapsed = try await measure {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        let response = try await client.post("/v1/chat/completions", openAIBody("request \(index)", maxTokens: 3))
                        #expect(response.status == .ok)
                    }
                }
                // While the first pair generates: two slots busy, four waiting.
                try await Task.sleep(for: .milliseconds(150))
                let busy = try await client.stats()
                #expect(busy["inFlight"] as? Int == 2)
                #expect(busy["queued"] as? Int == 4)
                let slots = try await client.get("/slots")
                #expect(slots.text.components(separatedBy: #""is_processing":true"#).count - 1 == 2)
                try await group.waitForAll()
            }
        }
        #expect(elapsed >= .milliseconds(800), "\(elapsed)")
        #expect(elapsed < .milliseconds(2000), "\(elapsed)")
        let stats = try await client.stats()
        #expect(stats["requests"] as? Int == 6)
        #expect(stats["completed"] as? Int == 6)
        #expect(stats["maxInFlight"] as? Int == 2)
        #expect(stats["inFlight"] as? Int == 0)
        #expect(stats["queued"] as? Int == 0)
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 0, promptMilliseconds: 500, maxQueue: 1))) func fullQueueAnswersBusy() async throws {
        let client = try SimulatorFixture.current
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    let response = try await client.post("/api/chat", ollamaBody(stream: false))
                    #expect(response.status == .ok)
                }
            }
            try await Task.sleep(for: .milliseconds(150))
            let rejected = try await client.post("/api/chat", ollamaBody(stream: false))
            #expect(rejected.status == .serviceUnavailable)
            #expect((try json(rejected)["error"] as? String)?.hasPrefix("server busy") == true)
            let openAI = try await client.post("/v1/chat/completions", openAIBody())
            #expect(openAI.status == .serviceUnavailable)
            #expect(openAI.text.contains("unavailable_error"))
            try await group.waitForAll()
        }
        let stats = try await client.stats()
        #expect(stats["rejected"] as? Int == 2)
        #expect(stats["completed"] as? Int == 2)
    }

    @Test(.withSimulator(.init(tokenMilliseconds: 20, promptMilliseconds: 50))) func streamedTokensArriveAtTheirPace() async throws {
        let client = try SimulatorFixture.current
        let elapsed = try await measure {
            let response = try await client.post("/api/chat", ollamaBody(numPredict: 10))
            #expect(response.text.split(separator: "\n").count == 11)
        }
        #expect(elapsed >= .milliseconds(250), "\(elapsed)")
        #expect(elapsed < .milliseconds(1000), "\(elapsed)")
    }

    @Test(.withSimulator(.init(tokenMilliseconds: 10, faults: SimulatorFaults(slowFactor: 3)))) func slowFactorStretchesGeneration() async throws {
        let client = try SimulatorFixture.current
        let elapsed = try await measure {
            let response = try await client.post("/v1/chat/completions", openAIBody(maxTokens: 10))
            #expect(response.status == .ok)
            let timings = try json(response)["timings"] as? [String: Any]
            #expect(timings?["predicted_ms"] as? Double == 300)
        }
        #expect(elapsed >= .milliseconds(280), "\(elapsed)")
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 0, promptMilliseconds: 10_000))) func disconnectFreesSlotAndQueuePlace() async throws {
        let client = try SimulatorFixture.current
        let holder = TestClient(host: "127.0.0.1", port: client.port)
        let waiter = TestClient(host: "127.0.0.1", port: client.port)
        holder.connect()
        waiter.connect()
        let body = ByteBuffer(string: openAIBody())
        try await holder.executeAndDontWaitForResponse(.init("/v1/chat/completions", method: .post, body: body))
        #expect(try await eventually { try await client.stats()["inFlight"] as? Int == 1 })
        try await waiter.executeAndDontWaitForResponse(.init("/v1/chat/completions", method: .post, body: body))
        #expect(try await eventually { try await client.stats()["queued"] as? Int == 1 })

        try await waiter.shutdown()
        #expect(try await eventually { try await client.stats()["queued"] as? Int == 0 })
        try await holder.shutdown()
        #expect(try await eventually { try await client.stats()["inFlight"] as? Int == 0 })
        let stats = try await client.stats()
        #expect(stats["cancelled"] as? Int == 2)
        #expect(stats["completed"] as? Int == 0)
        let slots = try await client.get("/slots")
        #expect(!slots.text.contains(#""is_processing":true"#))
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 100))) func disconnectMidStreamFreesSlot() async throws {
        let client = try SimulatorFixture.current
        let reader = TestClient(host: "127.0.0.1", port: client.port)
        reader.connect()
        let body = ByteBuffer(string: ollamaBody(numPredict: 100))
        try await reader.executeAndDontWaitForResponse(.init("/api/chat", method: .post, body: body))
        #expect(try await eventually { try await client.stats()["inFlight"] as? Int == 1 })
        try await Task.sleep(for: .milliseconds(250))
        try await reader.shutdown()
        // Noticed at the next token write or the one after.
        #expect(try await eventually { try await client.stats()["inFlight"] as? Int == 0 })
        let stats = try await client.stats()
        #expect(stats["cancelled"] as? Int == 1)
        #expect(stats["completed"] as? Int == 0)
        let next = try await client.post("/api/chat", ollamaBody(numPredict: 1))
        #expect(next.status == .ok)
    }

    @Test(.withSimulator) func failFirstAndFaultsEndpointRoundTrip() async throws {
        let client = try SimulatorFixture.current
        let set = try await client.post("/sim/faults", #"{"failFirst":2,"seed":9}"#)
        #expect(set.status == .ok)
        let faults = try JSONDecoder().decode(SimulatorFaults.self, from: Data(set.text.utf8))
        #expect(faults == SimulatorFaults(failFirst: 2, seed: 9))

        let first = try await client.post("/v1/chat/completions", openAIBody())
        #expect(first.status == .internalServerError)
        #expect((try json(first)["error"] as? [String: Any])?["type"] as? String == "server_error")
        let second = try await client.post("/api/chat", ollamaBody(stream: false))
        #expect(second.status == .internalServerError)
        #expect(try json(second)["error"] is String)
        let third = try await client.post("/v1/chat/completions", openAIBody())
        #expect(third.status == .ok)

        let stats = try await client.stats()
        #expect(stats["requests"] as? Int == 3)
        #expect(stats["faults"] as? Int == 2)
        #expect(stats["completed"] as? Int == 1)
        #expect(stats["maxInFlight"] as? Int == 1)

        let reset = try await client.post("/sim/reset", "")
        #expect(reset.status == .ok)
        let zeroed = try await client.stats()
        for key in ["requests", "completed", "inFlight", "maxInFlight", "queued", "rejected", "faults"] {
            #expect(zeroed[key] as? Int == 0, "\(key)")
        }

        let invalid = try await client.post("/sim/faults", #"{"failureRate":2}"#)
        #expect(invalid.status == .badRequest)
        #expect(invalid.text.contains("faults.failureRate"))
    }

    @Test(.withSimulator) func randomFaultsFollowTheirRates() async throws {
        let client = try SimulatorFixture.current
        _ = try await client.post("/sim/faults", #"{"rateLimitRate":1}"#)
        let limited = try await client.post("/v1/chat/completions", openAIBody())
        #expect(limited.status == .tooManyRequests)
        #expect(limited.text.contains("rate_limit_error"))

        _ = try await client.post("/sim/faults", #"{"busyRate":1}"#)
        let busy = try await client.post("/api/chat", ollamaBody())
        #expect(busy.status == .serviceUnavailable)

        _ = try await client.post("/sim/faults", #"{"failureRate":0.5,"seed":42}"#)
        var failures = 0
        for _ in 0..<40 where try await client.post("/v1/chat/completions", openAIBody()).status == .internalServerError {
            failures += 1
        }
        #expect((8...32).contains(failures), "\(failures) of 40")
        let stats = try await client.stats()
        #expect(stats["faults"] as? Int == 2 + failures)
    }

    @Test(.withSimulator(.init(tokenMilliseconds: 0, faults: SimulatorFaults(midStreamErrorRate: 1))))
    func midStreamErrorEndsTheStream() async throws {
        let client = try SimulatorFixture.current
        let ollama = try await client.post("/api/chat", ollamaBody(numPredict: 10))
        #expect(ollama.status == .ok)
        let lines = try ollama.text.split(separator: "\n").map { try json($0) }
        #expect(lines.count == 4)
        #expect(lines.last?["error"] is String)
        #expect(!lines.contains { $0["done"] as? Bool == true })

        let openAI = try await client.post("/v1/chat/completions", openAIBody(maxTokens: 10, stream: true))
        #expect(!openAI.text.contains("[DONE]"))
        #expect(openAI.text.contains(#""error""#))

        // Non-streaming answers are not affected.
        let plain = try await client.post("/api/chat", ollamaBody(stream: false))
        #expect(plain.status == .ok)
        let stats = try await client.stats()
        #expect(stats["faults"] as? Int == 2)
        #expect(stats["completed"] as? Int == 1)
    }

    @Test(.withSimulator(.init(tokenMilliseconds: 0, faults: SimulatorFaults(hangRate: 1, hangMilliseconds: 300))))
    func hangHoldsThenFails() async throws {
        let client = try SimulatorFixture.current
        let elapsed = try await measure {
            let response = try await client.post("/v1/chat/completions", openAIBody())
            #expect(response.status == .internalServerError)
        }
        #expect(elapsed >= .milliseconds(280), "\(elapsed)")
        #expect(try await client.stats()["inFlight"] as? Int == 0)
    }

    @Test func gracefulShutdownEndsAHang() async throws {
        let configuration = SimulatorConfiguration(
            port: 0,
            tokenMilliseconds: 0,
            faults: SimulatorFaults(hangRate: 1, hangMilliseconds: 60_000)
        )
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "llmq.sim.test")
        logger.logLevel = .warning
        let simulator = Simulator(configuration: configuration, logger: logger) { port in
            continuation.yield(port)
        }
        let group = ServiceGroup(configuration: .init(services: [simulator], logger: logger))
        let elapsed = try await measure {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                var iterator = ports.makeAsyncIterator()
                let port = try #require(await iterator.next())
                tasks.addTask {
                    let response = try await SimulatorClient(port: port).post("/v1/chat/completions", openAIBody())
                    #expect(response.status == .internalServerError)
                }
                #expect(try await eventually { simulator.stats.faults == 1 })
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
        #expect(elapsed < .seconds(10), "\(elapsed)")
    }

    @Test(.withSimulator) func zeroLatencyKeepsConnectionsAlive() async throws {
        let client = try SimulatorFixture.current
        try await TestClient.withClient(host: "127.0.0.1", port: client.port) { connection in
            for _ in 0..<20 {
                let response = try await connection.post("/v1/chat/completions", body: ByteBuffer(string: openAIBody()))
                #expect(response.status == .ok)
                #expect(response.headers[.connection] != "close")
            }
        }
    }
}

@Suite("Generation")
struct GenerationTests {
    private func request(_ text: String, maxTokens: Int? = nil, seed: Int64 = 0, stop: [String] = []) -> ChatRequest {
        ChatRequest(
            model: "sim",
            messages: [ChatMessage(role: "user", content: text)],
            maxTokens: maxTokens,
            seed: seed,
            stop: stop,
            stream: false
        )
    }

    @Test func sameRequestSameText() {
        let first = Generator.complete(request("hi", maxTokens: 8), defaultTokens: 16)
        let second = Generator.complete(request("hi", maxTokens: 8), defaultTokens: 16)
        let otherSeed = Generator.complete(request("hi", maxTokens: 8, seed: 1), defaultTokens: 16)
        #expect(first.text == second.text)
        #expect(first.text != otherSeed.text)
        #expect(first.completionTokens == 8)
        #expect(first.finishReason == .length)
        #expect((0..<8).map { String(first.token($0)) }.joined() == first.text)
    }

    @Test func stopSequenceCutsTheText() throws {
        let full = Generator.complete(request("hi", maxTokens: 8), defaultTokens: 16)
        let words = full.text.split(separator: " ")
        let stop = " " + words[3]
        let cut = Generator.complete(request("hi", maxTokens: 8, stop: [stop]), defaultTokens: 16)
        #expect(cut.text == words[0..<3].joined(separator: " "))
        #expect(cut.completionTokens == 3)
        #expect(cut.finishReason == .stop)
    }

    @Test func promptTokensCountWordsAndMessages() {
        let messages = [ChatMessage(role: "system", content: "be brief"), ChatMessage(role: "user", content: " one\ttwo\nthree ")]
        #expect(Generator.promptTokens(messages) == 4 + 2 + 4 + 3)
    }

    @Test func rfc3339() {
        #expect(WallTime(seconds: 0, nanoseconds: 0).rfc3339 == "1970-01-01T00:00:00Z")
        #expect(WallTime(seconds: 1_700_000_000, nanoseconds: 120_000_000).rfc3339 == "2023-11-14T22:13:20.12Z")
        #expect(WallTime(seconds: 951_782_400, nanoseconds: 5).rfc3339 == "2000-02-29T00:00:00.000000005Z")
    }

    @Test func faultsDecodeWithDefaults() throws {
        let faults = try JSONDecoder().decode(SimulatorFaults.self, from: Data(#"{"busyRate":0.25}"#.utf8))
        #expect(faults == SimulatorFaults(busyRate: 0.25))
        #expect(faults.hangMilliseconds == 60_000)
        #expect(faults.slowFactor == 1)
    }

    @Test func invalidConfigurationNamesTheKey() {
        #expect(throws: SimulatorConfigurationError.self) {
            try SimulatorConfiguration(slots: 0).validate()
        }
        do {
            try SimulatorConfiguration(faults: SimulatorFaults(hangRate: -1)).validate()
            Issue.record("expected an error")
        } catch {
            #expect(error.key == "faults.hangRate")
        }
    }
}
