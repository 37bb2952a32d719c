import Foundation
import Glibc
import LLMQBackends
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import LLMQSimulator
import LLMQWorker
import Testing

@Suite("Backend pools: weights, routing by model, breakers per backend, slots", .serialized, .withRedis)
struct BackendPoolTests {
    @Test(
        "Weights 9:1 split 1,000 requests 90/10 within 3 percentage points; replies name the backend that answered",
        .withSimulators(.init(slots: 64, tokenMilliseconds: 0), .init(slots: 64, tokenMilliseconds: 0)))
    func weightedSplit() async throws {
        let (redis, client) = try RedisFixture.current
        let (a, b) = try SimulatorFixture.pair
        let configuration = workerConfiguration(redis: redis, pool: [.named("old-model", a.url, weight: 9), .named("new-model", b.url, weight: 1)], concurrency: 32)
        let worker = try RunningWorker.start(configuration)
        try await publish(client, count: 1000, prompt: "ab ", maxTokens: 2)
        let replies = try await waitForReplies(client, count: 1000, timeout: .seconds(120))
        await worker.stop()
        #expect(replies.allSatisfy { $0["status"] == "ok" })
        let newShare = Double(replies.filter { $0["backend"] == "new-model" }.count) / 1000
        #expect(replies.allSatisfy { ["old-model", "new-model"].contains($0["backend"] ?? "") })
        #expect(abs(newShare - 0.1) <= 0.03, "new-model's share: \(newShare)")
        let (statsA, statsB) = (try await a.stats(), try await b.stats())
        #expect(statsA.requests + statsB.requests == 1000)
        // llmq status compares the backends from the counts the reply script keeps.
        let status = try await QueueStatus.read(from: client, streams: .init())
        let byBackend = status.replyCounts.byBackend
        #expect(byBackend["new-model"]?.ok == replies.filter { $0["backend"] == "new-model" }.count)
        #expect(byBackend["old-model"]?.ok == replies.filter { $0["backend"] == "old-model" }.count)
        #expect(status.text.contains("by backend: new-model ok"), "\(status.text)")
    }

    @Test("A request's model picks the backends that serve it; a model none serves is model_not_found without a call", .withSimulators(.init(), .init()))
    func routingByModel() async throws {
        let (redis, client) = try RedisFixture.current
        let (a, b) = try SimulatorFixture.pair
        let configuration = workerConfiguration(redis: redis, pool: [.named("qwen-host", a.url, models: ["qwen2.5:7b-instruct-q4_K_M"]), .named("llama-host", b.url, models: ["llama3.2:1b"])])
        let worker = try RunningWorker.start(configuration)
        for index in 0..<6 {
            try await publish(client, [("prompt", "q"), ("max_tokens", "2"), ("model", index % 2 == 0 ? "qwen2.5:7b-instruct-q4_K_M" : "llama3.2:1b"), ("id", "m\(index)")])
        }
        try await publish(client, [("prompt", "q"), ("model", "mistral:7b"), ("id", "unknown")])
        let replies = try await waitForReplies(client, count: 7)
        await worker.stop()
        let byID = Dictionary(uniqueKeysWithValues: replies.map { ($0["id"] ?? "", $0) })
        for index in 0..<6 {
            #expect(byID["m\(index)"]?["backend"] == (index % 2 == 0 ? "qwen-host" : "llama-host"), "\(byID["m\(index)"] ?? [:])")
        }
        #expect(byID["unknown"]?["error_code"] == "model_not_found", "\(byID["unknown"] ?? [:])")
        let (statsA, statsB) = (try await a.stats(), try await b.stats())
        #expect(statsA.requests == 3 && statsB.requests == 3, "no call for the unknown model")
    }

    @Test("A backend that is down at start opens its own breaker; the others take its share and no request fails", .withSimulator(.init(slots: 8, tokenMilliseconds: 0)))
    func breakerPerBackend() async throws {
        let (redis, client) = try RedisFixture.current
        let alive = try SimulatorFixture.current
        let dead = "http://127.0.0.1:\(try freePort())"
        var configuration = workerConfiguration(redis: redis, pool: [.named("gone", dead), .named("here", alive.url)], concurrency: 4)
        configuration.breaker.failureThreshold = 2
        configuration.breaker.openDuration = .seconds(60)
        let worker = try RunningWorker.start(configuration)
        try await publish(client, count: 60, prompt: "p", maxTokens: 2)
        let replies = try await waitForReplies(client, count: 60)
        await worker.stop()
        #expect(replies.allSatisfy { $0["status"] == "ok" && $0["backend"] == "here" }, "\(replies.filter { $0["status"] != "ok" }.prefix(3))")
        // Down when the worker started (no answer on /props): its breaker opened before any
        // request, so none needed a second try.
        #expect(replies.allSatisfy { $0["attempts"] == "1" }, "\(replies.filter { $0["attempts"] != "1" }.prefix(3))")
    }

    @Test("A backend killed mid-run: its requests in flight are retried on the other, no request fails, and its breaker keeps it out")
    func backendKilledMidRun() async throws {
        let (redis, client) = try RedisFixture.current
        // Processes, so that one can be killed as a server dies (SIGKILL), mid-request.
        let a = try await SimProcess(["--slots", "4", "--token-ms", "5"])
        let b = try await SimProcess(["--slots", "4", "--token-ms", "5"])
        var configuration = workerConfiguration(redis: redis, pool: [.named("a", a.url), .named("b", b.url)], concurrency: 8)
        configuration.breaker.failureThreshold = 2
        configuration.breaker.openDuration = .seconds(60)
        let worker = try RunningWorker.start(configuration)
        try await publish(client, count: 200, prompt: "k", maxTokens: 10)
        _ = try await waitForReplies(client, count: 40)
        a.kill()
        let replies = try await waitForReplies(client, count: 200, timeout: .seconds(60))
        await worker.stop()
        #expect(replies.allSatisfy { $0["status"] == "ok" }, "\(replies.filter { $0["status"] != "ok" }.prefix(3))")
        let late = replies.suffix(100)
        #expect(late.allSatisfy { $0["backend"] == "b" }, "after the kill only b answers")
        #expect(replies.prefix(40).contains { $0["backend"] == "a" } && replies.prefix(40).contains { $0["backend"] == "b" }, "both served before")
    }

    @Test(
        "llmq worker with LLMQ_BACKENDS: two named llama-servers with their slots learned from /props share the work",
        .withSimulators(.init(slots: 3, tokenMilliseconds: 10), .init(slots: 2, tokenMilliseconds: 10)))
    func workerProcessWithBackendList() async throws {
        let (redis, client) = try RedisFixture.current
        let (a, b) = try SimulatorFixture.pair
        let list = #"[{"name": "gpu-a", "type": "llama-cpp", "endpoint": "\#(a.url)"}, {"name": "gpu-b", "type": "llama-cpp", "endpoint": "\#(b.url)"}]"#
        let worker = try WorkerProcess.start(name: "pool", environment: [
            "LLMQ_REDIS_URL": redis.url, "LLMQ_BACKENDS": list, "LLMQ_CONCURRENCY": "16", "LLMQ_READ_BLOCK_MS": "200",
        ])
        try await publish(client, count: 50, prompt: "w", maxTokens: 10)
        let replies = try await waitForReplies(client, count: 50, workers: [worker])
        #expect(replies.allSatisfy { $0["status"] == "ok" })
        let shareA = Double(replies.filter { $0["backend"] == "gpu-a" }.count) / 50
        #expect(shareA > 0.45 && shareA < 0.75, "by slots 3:2, gpu-a's share: \(shareA)")
        let (statsA, statsB) = (try await a.stats(), try await b.stats())
        #expect(statsA.maxInFlight <= 3 && statsB.maxInFlight <= 2, "\(statsA.maxInFlight), \(statsB.maxInFlight)")
        #expect(worker.output.contains("backend slots"), "\(worker.output.prefix(800))")
    }

    @Test("llmq bench reports each backend's share, latency and tokens per second", .withSimulators(.init(slots: 64, tokenMilliseconds: 1), .init(slots: 64, tokenMilliseconds: 3)))
    func benchPerBackend() async throws {
        let redis = try RedisFixture.current.server
        // Slots to spare on both: the weights decide, not which one has a slot free.
        let (a, b) = try SimulatorFixture.pair
        let list = #"[{"name": "old", "type": "llama-cpp", "endpoint": "\#(a.url)", "weight": 3}, {"name": "new", "type": "llama-cpp", "endpoint": "\#(b.url)", "weight": 1}]"#
        try WorkerProcess.start(name: "bench-pool", environment: [
            "LLMQ_REDIS_URL": redis.url, "LLMQ_BACKENDS": list, "LLMQ_CONCURRENCY": "16", "LLMQ_READ_BLOCK_MS": "200",
        ])
        let llmq = try llmqExecutable().path
        let json = try await runProgram(llmq, ["bench", "--redis-url", redis.url, "--requests", "200", "--max-tokens", "8", "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any], "\(json.output) \(json.error)")
        let backends = try #require(report["backends"] as? [[String: Any]])
        let replies = Dictionary(uniqueKeysWithValues: backends.map { ($0["name"] as? String ?? "", $0["replies"] as? Int ?? 0) })
        #expect(replies.values.reduce(0, +) == 200 && Set(replies.keys) == ["old", "new"], "\(replies)")
        #expect(abs(Double(replies["old"] ?? 0) / 200 - 0.75) <= 0.08, "\(replies)")
        #expect(backends.allSatisfy { ($0["tokensPerSecond"] as? Double ?? 0) > 0 })
        let text = try await runProgram(llmq, ["bench", "--redis-url", redis.url, "--requests", "40", "--max-tokens", "8"])
        #expect(text.output.contains("backend          replies  share"), "\(text.output)")
    }

    @Test(
        "Slots: a worker never has more requests at a backend than its slots, and the rest wait in the stream",
        .withSimulators(.init(slots: 8, tokenMilliseconds: 20), .init(slots: 8, tokenMilliseconds: 10)))
    func slotsAreNotOverfilled() async throws {
        let (redis, client) = try RedisFixture.current
        let (a, b) = try SimulatorFixture.pair
        let configuration = workerConfiguration(redis: redis, pool: [.named("slow", a.url, slots: 2), .named("fast", b.url, slots: 3)], concurrency: 32)
        let worker = try RunningWorker.start(configuration)
        try await publish(client, count: 40, prompt: "s", maxTokens: 10)
        try await Task.sleep(for: .milliseconds(300))
        let pending = try await client.send("XPENDING", "llmq:requests", "llmq").array?.first?.int ?? -1
        #expect(pending <= 5, "claimed beyond the backends' 5 slots: \(pending)")
        let replies = try await waitForReplies(client, count: 40)
        await worker.stop()
        #expect(replies.allSatisfy { $0["status"] == "ok" })
        let (statsA, statsB) = (try await a.stats(), try await b.stats())
        #expect(statsA.maxInFlight == 2 && statsB.maxInFlight == 3, "full, never over: \(statsA.maxInFlight), \(statsB.maxInFlight)")
    }
}
