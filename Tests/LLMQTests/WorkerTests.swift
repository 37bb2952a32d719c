import Foundation
import LLMQBackends
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import LLMQSimulator
import LLMQWorker
import Testing

@Suite("Worker against redis-server and llmq sim", .serialized, .withRedis)
struct WorkerTests {
    @Test("llama-cpp backend: a request published with redis-cli gets one ok reply with usage and timings", .withSimulator(.init(tokenMilliseconds: 1)))
    func llamaCppEndToEnd() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))

        // Exactly what a user types; the group does not exist before the worker starts.
        let entryID = try await redis.redisCLI(["XADD", "llmq:requests", "*", "prompt", "hi"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try await redis.redisCLI(["XADD", "llmq:requests", "*", "prompt", "Write a haiku about queues", "max_tokens", "12", "id", "haiku-1"])
        let replies = try await waitForReplies(client, count: 2)
        let bare = try #require(replies.first { $0["request"] == entryID })
        #expect(bare["status"] == "ok")
        #expect(bare["id"] == entryID)
        #expect(bare["content"]?.isEmpty == false)
        #expect(bare["backend"] == "llama-cpp")

        let haiku = try #require(replies.first { $0["id"] == "haiku-1" })
        #expect(haiku["status"] == "ok")
        #expect(haiku["completion_tokens"] == "12")
        #expect(haiku["finish_reason"] == "length")
        #expect(Int(haiku["prompt_tokens"] ?? "") ?? 0 > 0)
        #expect(haiku["generation_ms"] != nil)
        for field in ["request", "model", "consumer", "queue_ms", "backend_ms", "total_ms"] {
            #expect(haiku[field] != nil, "reply lacks \(field)")
        }
        #expect(Double(haiku["total_ms"] ?? "") ?? -1 >= Double(haiku["backend_ms"] ?? "") ?? 0)

        // Both acknowledged: nothing pending.
        let pending = try await client.send("XPENDING", "llmq:requests", "llmq")
        #expect(pending.array?.first?.int == 0)
    }

    @Test(
        "ollama backend: native /api/chat and the OpenAI-compatible path both work",
        .withSimulator(.init(tokenMilliseconds: 1, models: ["llama3.2:1b"], strictModels: true)),
        arguments: ["", "/api/chat", "/v1/chat/completions"])
    func ollamaEndToEnd(path: String) async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let backend = BackendConfiguration(kind: .ollama, endpoint: sim.url + path, model: "llama3.2:1b")
        try RunningWorker.start(workerConfiguration(redis: redis, backend: backend))

        try await publish(client, [("messages", #"[{"role":"user","content":"Why is the sky blue?"}]"#), ("max_tokens", "5"), ("id", "q1")])
        try await publish(client, [("prompt", "hello"), ("model", "missing-model"), ("id", "q2")])
        let replies = try await waitForReplies(client, count: 2)
        let ok = try #require(replies.first { $0["id"] == "q1" })
        #expect(ok["status"] == "ok")
        #expect(ok["backend"] == "ollama")
        #expect(ok["completion_tokens"] == "5")
        #expect(ok["finish_reason"] == "length")
        #expect(Int(ok["prompt_tokens"] ?? "") ?? 0 > 0)
        #expect(ok["model"]?.hasPrefix("llama3.2") == true)

        let missing = try #require(replies.first { $0["id"] == "q2" })
        #expect(missing["status"] == "error")
        #expect(missing["error_code"] == "model_not_found")
        #expect(missing["attempts"] == "1", "a missing model is permanent: no retries")
    }

    @Test("parallelism: 40 requests, 2 workers x concurrency 4, 8 slots: wall time near 40/8 of one request", .withSimulator(.init(slots: 8, tokenMilliseconds: 20)))
    func parallelism() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let backend = BackendConfiguration(kind: .llamaCpp, endpoint: sim.url)
        for index in 1...2 {
            try RunningWorker.start(workerConfiguration(redis: redis, backend: backend, consumer: "w\(index)", concurrency: 4))
        }

        // One request alone: the unit of time (10 tokens x 20 ms).
        let single = ContinuousClock.now
        try await publish(client, [("prompt", "warm up"), ("max_tokens", "10")])
        _ = try await waitForReplies(client, count: 1)
        let one = ContinuousClock.now - single
        try await sim.reset()

        let start = ContinuousClock.now
        try await publish(client, count: 40, prompt: "request ", maxTokens: 10, ids: "p")
        let replies = try await waitForReplies(client, count: 41)
        let wall = ContinuousClock.now - start
        #expect(replies.filter { $0["status"] == "ok" }.count == 41)
        let stats = try await sim.stats()
        #expect(stats.maxInFlight == 8, "the pool should fill all 8 slots at once")
        // 40 requests in waves of 8 take 5 units; one after another they would take 40.
        print("parallelism: one request \(one), 40 requests \(wall) (\(wall / one) units; serial would be 40)")
        #expect(wall < one * 12, "40 requests took \(wall), one took \(one): not parallel")
        #expect(wall >= one * 4, "faster than 8 slots allow: the simulator is not limiting")
    }

    @Test("two workers share the group: every request is answered exactly once, by one of them", .withSimulator(.init(slots: 16, tokenMilliseconds: 0)))
    func sharedGroup() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let backend = BackendConfiguration(kind: .llamaCpp, endpoint: sim.url)
        for name in ["alpha", "beta"] {
            try RunningWorker.start(workerConfiguration(redis: redis, backend: backend, consumer: name, concurrency: 8))
        }
        let count = 300
        try await publish(client, count: count, prompt: "n", maxTokens: 3, ids: "r")
        let replies = try await waitForReplies(client, count: count)
        try await Task.sleep(for: .milliseconds(300))
        let final = try await readReplies(client)
        #expect(final.count == count, "a request was answered twice")
        #expect(Set(final.compactMap { $0["id"] }) == Set((0..<count).map { "r\($0)" }))
        #expect(Set(final.compactMap { $0["request"] }).count == count)
        let byConsumer = Dictionary(grouping: replies, by: { $0["consumer"] ?? "" })
        #expect(byConsumer.keys.sorted() == ["alpha", "beta"], "both workers should have served requests")
        let pending = try await client.send("XPENDING", "llmq:requests", "llmq")
        #expect(pending.array?.first?.int == 0)
    }

    @Test("bad input gets an invalid_request reply that says what is wrong, and the worker keeps serving", .withSimulator(.init(tokenMilliseconds: 0)))
    func badInput() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, simulator: sim)
        configuration.limits.maxRequestBytes = 4096
        try RunningWorker.start(configuration)

        let cases: [(fields: [(String, String)], message: String)] = [
            ([("text", "no prompt")], "missing field"),
            ([("prompt", "a"), ("messages", "[]")], "not both"),
            ([("messages", "[{\"role\": \"user\", \"content\": \"hi\"")], "messages is not valid JSON"),
            ([("messages", "{\"role\": \"user\"}")], "messages must be a JSON array"),
            ([("messages", "[]")], "messages is empty"),
            ([("messages", "[{\"role\": \"robot\", \"content\": \"hi\"}]")], "messages[0].role \"robot\" is not one of system, user, assistant"),
            ([("messages", "[{\"role\": \"user\", \"content\": 42}]")], "messages[0].content must be a string"),
            ([("prompt", "hi"), ("max_tokens", "lots")], "max_tokens must be a whole number"),
            ([("prompt", "hi"), ("max_tokens", "0")], "max_tokens 0 is out of range"),
            ([("prompt", "hi"), ("temperature", "hot")], "temperature must be a number"),
            ([("prompt", "hi"), ("top_p", "1.5")], "top_p 1.5 is out of range"),
            ([("prompt", "hi"), ("stop", "[1, 2]")], "stop starts with \"[\" but is not a JSON array of strings"),
            ([("prompt", String(repeating: "x", count: 5000))], "over the limit of 4096 bytes"),
            ([("prompt", "hi"), ("reply_to", "other:replies")], "reply_to \"other:replies\" is not allowed"),
            ([("prompt", "   ")], "prompt is empty"),
            ([("prompt", "hi"), ("prompt", "again")], "given more than once"),
        ]
        for (index, testCase) in cases.enumerated() {
            try await publish(client, testCase.fields + [("id", "bad\(index)")])
        }
        try await publish(client, [("prompt", "still alive?"), ("max_tokens", "2"), ("id", "good")])
        let replies = try await waitForReplies(client, count: cases.count + 1)
        for (index, testCase) in cases.enumerated() {
            let reply = try #require(replies.first { $0["id"] == "bad\(index)" }, "no reply for case \(index)")
            #expect(reply["status"] == "error")
            #expect(reply["error_code"] == "invalid_request")
            #expect(reply["error"]?.contains(testCase.message) == true, "case \(index): \(reply["error"] ?? "nil")")
        }
        #expect(replies.first { $0["id"] == "good" }?["status"] == "ok")
        let pending = try await client.send("XPENDING", "llmq:requests", "llmq")
        #expect(pending.array?.first?.int == 0, "bad requests must be acknowledged too")
    }

    @Test("reply_to routes the reply; system and messages reach the backend", .withSimulator(.init(tokenMilliseconds: 0)))
    func replyTo() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))
        try await publish(client, [("prompt", "hi"), ("system", "be brief"), ("reply_to", "llmq:replies:alice"), ("id", "a1")])
        let replies = try await waitForReplies(client, count: 1, stream: "llmq:replies:alice")
        #expect(replies[0]["id"] == "a1")
        #expect(replies[0]["status"] == "ok")
        #expect(try await client.send("XLEN", "llmq:replies").int == 0)
    }
}
