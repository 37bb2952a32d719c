import Foundation
import LLMQBackends
import LLMQRedis
import LLMQSimulator
import LLMQTestSupport
import Testing

/// Conversations of several turns over two simulators with a prompt cache, through workers that
/// share the slots: with affinity each conversation stays on one backend, which has its prefix.
@Suite("Conversation affinity through the pool", .serialized)
struct AffinityRoutingTests {
    /// A cached prompt token costs nothing, a computed one 0.2 ms (1,000 tokens: 200 ms).
    static let cachingSim = SimulatorConfiguration(slots: 8, tokenMilliseconds: 1, promptTokenMilliseconds: 0.2)

    @Test(
        "8 conversations x 4 turns, the history growing: with affinity every next turn finds its prefix on its backend; without, some go to the other",
        .withRedis, .withSimulators(cachingSim, cachingSim), arguments: [true, false])
    func conversationsStay(affinity: Bool) async throws {
        let (redis, client) = try RedisFixture.current
        let (a, b) = try SimulatorFixture.pair
        let environment = [
            "LLMQ_REDIS_URL": redis.url, "LLMQ_CONCURRENCY": "8", "LLMQ_READ_BLOCK_MS": "200", "LLMQ_LOG_LEVEL": "notice",
            "LLMQ_AFFINITY_ENABLED": String(affinity),
            "LLMQ_BACKENDS": #"[{"name": "a", "type": "llama-cpp", "endpoint": "\#(a.url)"}, {"name": "b", "type": "llama-cpp", "endpoint": "\#(b.url)"}]"#,
        ]
        let workers = try (1...2).map { try WorkerProcess.start(name: "affinity-\(affinity)-\($0)", environment: environment) }
        let system = "You answer briefly. " + String(repeating: "context words here ", count: 60)
        var histories = (0..<8).map { [["role": "system", "content": system + "conversation \($0)"]] }
        var backends: [[String]] = Array(repeating: [], count: 8)
        var cached: [[Int]] = Array(repeating: [], count: 8)
        for turn in 0..<4 {
            let mark = try await client.send("XLEN", "llmq:replies").int ?? 0
            for index in histories.indices {
                histories[index].append(["role": "user", "content": "turn \(turn): " + String(repeating: "tell me more ", count: 20)])
                let messages = String(decoding: try JSONSerialization.data(withJSONObject: histories[index]), as: UTF8.self)
                try await publish(client, [("messages", messages), ("max_tokens", "16"), ("id", "c\(index)-t\(turn)")])
            }
            let replies = Array(try await waitForReplies(client, count: mark + 8, timeout: .seconds(60)).dropFirst(mark))
            for reply in replies {
                guard let id = reply["id"], let index = Int(id.dropFirst().prefix { $0 != "-" }) else { continue }
                #expect(reply["status"] == "ok", "\(reply)")
                histories[index].append(["role": "assistant", "content": reply["content"] ?? ""])
                backends[index].append(reply["backend"] ?? "?")
                cached[index].append(Int(reply["cached_tokens"] ?? "") ?? -1)
            }
        }
        // Turns 2 to 4 carry the conversation: with affinity each goes home, and finds there
        // everything but the newest messages.
        let stayed = backends.filter { Set($0.dropFirst()).count == 1 }.count
        let (statsA, statsB) = (try await a.stats(), try await b.stats())
        let hitRatio = Double(statsA.cachedPromptTokens + statsB.cachedPromptTokens) / Double(statsA.promptTokens + statsB.promptTokens)
        if affinity {
            #expect(stayed == 8, "conversations that stayed on one backend: \(backends)")
            #expect(cached.allSatisfy { $0.dropFirst(2).allSatisfy { $0 > 300 } }, "cached tokens per turn: \(cached)")
            #expect(hitRatio > 0.6, "cache hits: \(hitRatio)")
        } else {
            #expect(stayed < 8, "without affinity some conversations move: \(backends)")
        }
        print("affinity \(affinity): prompt tokens cached \(hitRatio), backends \(backends)")
        for worker in workers {
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit() == 0, "worker did not exit cleanly: \(worker.output.suffix(500))")
        }
    }
}
