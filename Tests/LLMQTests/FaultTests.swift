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

/// Every request has exactly one reply, and nothing is left pending.
private func expectExactlyOneReplyEach(_ replies: [[String: String]], ids: Set<String>, sourceLocation: SourceLocation = #_sourceLocation) {
    let byID = Dictionary(grouping: replies, by: { $0["id"] ?? "" })
    let duplicates = byID.filter { $0.value.count > 1 }.keys.sorted()
    let missing = ids.subtracting(byID.keys).sorted()
    #expect(duplicates.isEmpty, "answered more than once: \(duplicates.prefix(10))", sourceLocation: sourceLocation)
    #expect(missing.isEmpty, "never answered: \(missing.prefix(10))", sourceLocation: sourceLocation)
}

private func pendingCount(_ client: RedisClient) async throws -> Int {
    try await client.send("XPENDING", "llmq:requests", "llmq").array?.first?.int ?? -1
}

@Suite("Faults: crashes, Redis restarts, backend failures, malformed input", .serialized, .withRedis)
struct FaultTests {
    private func processEnvironment(redis: RedisServer, sim: RunningSimulator) -> [String: String] {
        workerEnvironment(
            redis: redis, endpoint: sim.url, quickTakeover,
            ["LLMQ_CONCURRENCY": "4", "LLMQ_SHUTDOWN_GRACE_SECONDS": "10", "LLMQ_LOG_LEVEL": "notice"])
    }

    @Test("500 requests, 3 worker processes, two kill -9 in flight and restarts: one reply each, nothing pending", .withSimulator(.init(slots: 12, tokenMilliseconds: 5)))
    func killedWorkers() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let environment = processEnvironment(redis: redis, sim: sim)
        let workers = try (1...3).map { try WorkerProcess.start(name: "crash-\($0)", environment: environment) }

        let count = 500
        try await publish(client, count: count, prompt: "job ", maxTokens: 20, ids: "job-")
        for victim in [workers[0], workers[1]] {
            // Let it take work, then kill it while requests are in flight.
            try await Task.sleep(for: .milliseconds(700))
            #expect(try await pendingCount(client) > 0)
            victim.signal(SIGKILL)
            _ = await victim.waitForExit()
            try await Task.sleep(for: .milliseconds(300))
            try victim.start()
        }
        let replies = try await waitForReplies(client, count: count, timeout: .seconds(90))
        try await Task.sleep(for: .milliseconds(500))
        let final = try await readReplies(client)
        #expect(final.count == count)
        expectExactlyOneReplyEach(final, ids: Set((0..<count).map { "job-\($0)" }))
        #expect(replies.allSatisfy { $0["status"] == "ok" })
        #expect(try await pendingCount(client) == 0)
        #expect(workers.contains { $0.output.contains("claimed entries idle on other consumers") },
                "the killed workers' entries should have been claimed by the others")
        for worker in workers {
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit() == 0, "worker did not exit cleanly: \(worker.output.suffix(500))")
        }
    }

    @Test(
        "redis-server killed and restarted mid-run (append-only on): nothing lost, nothing answered twice",
        .withRedis(appendOnly: true), .withSimulator(.init(slots: 8, tokenMilliseconds: 5)))
    func redisRestart() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        for index in 1...2 {
            try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim, consumer: "r\(index)"))
        }
        try await publish(client, count: 300, prompt: "before ", maxTokens: 10, ids: "b")
        try await Task.sleep(for: .milliseconds(600))
        await redis.kill()
        try await Task.sleep(for: .milliseconds(700))
        try await redis.start()
        // The client reconnects on its next command; the first may meet the broken connection.
        for index in 0..<100 {
            var published = false
            for _ in 0..<5 where !published {
                published = (try? await publish(client, [("prompt", "after \(index)"), ("max_tokens", "10"), ("id", "a\(index)")])) != nil
            }
            #expect(published)
        }
        _ = try await waitForReplies(client, count: 400, timeout: .seconds(60))
        try await Task.sleep(for: .milliseconds(500))
        let final = try await readReplies(client)
        expectExactlyOneReplyEach(final, ids: Set((0..<300).map { "b\($0)" } + (0..<100).map { "a\($0)" }))
        #expect(final.count == 400)
        #expect(try await pendingCount(client) == 0)
    }

    @Test("transient failures are retried with backoff; permanent ones are answered at once", .withSimulator(.init(tokenMilliseconds: 0, contextSize: 64)))
    func retries() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, backend: .init(kind: .llamaCpp, endpoint: sim.url, requestTimeout: .milliseconds(500)), concurrency: 1)
        configuration.breaker.failureThreshold = 100
        try RunningWorker.start(configuration)

        func run(_ id: String, _ faults: SimulatorFaults, fields: [(String, String)] = [("prompt", "hi"), ("max_tokens", "4")]) async throws -> (reply: [String: String], calls: Int) {
            try await sim.setFaults(faults)
            try await sim.reset()
            // Counted before publishing: a permanent error is answered at once, maybe before a
            // count taken after the publish.
            let before = try await readReplies(client).count
            try await publish(client, fields + [("id", id)])
            let replies = try await waitForReplies(client, count: before + 1)
            let reply = try #require(replies.first { $0["id"] == id })
            return (reply, try await sim.stats().requests)
        }

        let recovered = try await run("fail-twice", SimulatorFaults(failFirst: 2))
        #expect(recovered.reply["status"] == "ok")
        #expect(recovered.reply["attempts"] == "3")
        #expect(recovered.calls == 3)

        let failing = try await run("always-500", SimulatorFaults(failureRate: 1))
        #expect(failing.reply["error_code"] == "backend_error")
        #expect(failing.reply["attempts"] == "3")
        #expect(failing.calls == 3)

        let busy = try await run("always-503", SimulatorFaults(busyRate: 1))
        #expect(busy.reply["error_code"] == "backend_busy")
        #expect(busy.calls == 3)

        let limited = try await run("always-429", SimulatorFaults(rateLimitRate: 1))
        #expect(limited.reply["error_code"] == "backend_busy")

        let hanging = try await run("hang", SimulatorFaults(hangRate: 1, hangMilliseconds: 5000))
        #expect(hanging.reply["error_code"] == "backend_timeout")
        #expect(hanging.reply["attempts"] == "3")

        let context = try await run("too-long", SimulatorFaults(), fields: [("prompt", String(repeating: "word ", count: 100)), ("max_tokens", "8")])
        #expect(context.reply["error_code"] == "context_exceeded")
        #expect(context.reply["attempts"] == "1", "a permanent error must not be retried")
        #expect(context.calls == 1)
    }

    @Test("a refused connection is backend_unavailable; the worker keeps running")
    func refused() async throws {
        let (redis, client) = try RedisFixture.current
        try RunningWorker.start(workerConfiguration(redis: redis, backend: .init(kind: .llamaCpp, endpoint: "http://127.0.0.1:\(try freePort())")))
        try await publish(client, [("prompt", "anyone?"), ("id", "nobody")])
        let replies = try await waitForReplies(client, count: 1)
        #expect(replies[0]["error_code"] == "backend_unavailable")
        #expect(replies[0]["error"]?.contains("127.0.0.1") == true)
    }

    @Test(
        "fallback: while the primary fails, the fallback answers; the open circuit stops calling the primary",
        .withSimulators(.init(tokenMilliseconds: 0, faults: SimulatorFaults(failureRate: 1)), .init(tokenMilliseconds: 0, models: ["backup"])))
    func fallback() async throws {
        let (redis, client) = try RedisFixture.current
        let (primary, secondary) = try SimulatorFixture.pair
        var configuration = workerConfiguration(redis: redis, simulator: primary, concurrency: 1)
        configuration.fallback = BackendConfiguration(kind: .ollama, endpoint: secondary.url, model: "backup")
        configuration.breaker.failureThreshold = 3
        configuration.breaker.openDuration = .seconds(30)
        try RunningWorker.start(configuration)
        try await publish(client, count: 10, prompt: "q", maxTokens: 3, ids: "f")
        let replies = try await waitForReplies(client, count: 10)
        #expect(replies.allSatisfy { $0["status"] == "ok" && $0["backend"] == "ollama" })
        // Three failures open the circuit; after that the primary is not called at all.
        #expect(try await primary.stats().requests == 3)
        #expect(try await secondary.stats().requests == 10)
    }

    @Test(
        "open circuit without a fallback: the worker stops taking requests, then a probe finds the backend back and they are served",
        .withSimulator(.init(tokenMilliseconds: 0, faults: SimulatorFaults(failureRate: 1))))
    func circuitWithoutFallback() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, simulator: sim, concurrency: 1)
        configuration.retry.maxAttempts = 1
        configuration.breaker.failureThreshold = 2
        configuration.breaker.openDuration = .seconds(2)
        try RunningWorker.start(configuration)
        for index in 0..<2 {
            try await publish(client, [("prompt", "fails"), ("max_tokens", "2"), ("id", "down\(index)")])
        }
        let failed = try await waitForReplies(client, count: 2)
        #expect(failed.allSatisfy { $0["error_code"] == "backend_error" })
        // The circuit is open: these wait in the stream instead of becoming errors.
        for index in 0..<5 {
            try await publish(client, [("prompt", "waits"), ("max_tokens", "2"), ("id", "held\(index)")])
        }
        try await Task.sleep(for: .milliseconds(800))
        #expect(try await readReplies(client).count == 2)
        #expect(try await sim.stats().requests == 2, "no request may reach the backend while the circuit is open")
        try await sim.setFaults(SimulatorFaults())
        let replies = try await waitForReplies(client, count: 7, timeout: .seconds(15))
        #expect(replies.filter { $0["id"]?.hasPrefix("held") == true }.allSatisfy { $0["status"] == "ok" })
        #expect(try await pendingCount(client) == 0)
    }

    @Test("1,000 random malformed entries: no crash, exactly one reply each", .withSimulator(.init(slots: 32, tokenMilliseconds: 0)))
    func randomGarbage() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, simulator: sim, concurrency: 16)
        configuration.limits.maxRequestBytes = 2048
        try RunningWorker.start(configuration)

        var generator = SystemRandomNumberGenerator()
        let names = ["prompt", "messages", "system", "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ttl_ms", "deadline_ms", "junk", "", "prompt\u{0}"]
        let values: [() -> [UInt8]] = [
            { Array("{\"role\": \"user\"".utf8) },
            { Array("[{\"role\":\"wizard\",\"content\":\"x\"}]".utf8) },
            { Array("[{\"role\":\"user\",\"content\":[1,2]}]".utf8) },
            { Array("-1".utf8) }, { Array("1e309".utf8) }, { Array("NaN".utf8) }, { Array("99999999999999999999".utf8) },
            { Array("[\"a\",".utf8) }, { [0xFF, 0xFE, 0x00, 0xC3] }, { [] },
            { (0..<Int.random(in: 0..<64)).map { _ in UInt8.random(in: 0...255) } },
            { Array(String(repeating: "z", count: 3000).utf8) },
        ]
        var commands: [RedisCommand] = []
        for _ in 0..<1000 {
            var command = RedisCommand("XADD", "llmq:requests", "*")
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                command.append(names.randomElement(using: &generator)!)
                command.append(bytes: values.randomElement(using: &generator)!())
            }
            commands.append(command)
        }
        var ids: [String] = []
        for chunk in stride(from: 0, to: commands.count, by: 100) {
            ids += try await client.pipeline(Array(commands[chunk..<min(chunk + 100, commands.count)])).compactMap(\.string)
        }
        #expect(ids.count == 1000)
        _ = try await waitForReplies(client, count: 1000, timeout: .seconds(60))
        try await Task.sleep(for: .milliseconds(300))
        let final = try await readReplies(client)
        #expect(final.count == 1000)
        let byRequest = Dictionary(grouping: final, by: { $0["request"] ?? "" })
        #expect(Set(byRequest.keys) == Set(ids))
        #expect(byRequest.values.allSatisfy { $0.count == 1 })
        #expect(final.allSatisfy { $0["status"] == "ok" || ($0["error_code"] != nil && $0["error"]?.isEmpty == false) })
        #expect(try await pendingCount(client) == 0)
        // Still serving.
        try await publish(client, [("prompt", "after the storm"), ("max_tokens", "2"), ("id", "last")])
        let after = try await waitForReplies(client, count: 1001)
        #expect(after.first { $0["id"] == "last" }?["status"] == "ok")
    }

    @Test("an entry delivered maxDeliveries times goes to the dead-letter stream with an error reply", .withSimulator(.init(tokenMilliseconds: 0)))
    func deadLetter() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        let id = try await publish(client, [("prompt", "poison"), ("id", "poison-1")])
        // A consumer that took it and died five times over.
        try await abandonNextEntries(client, deliveries: 5)
        var configuration = workerConfiguration(redis: redis, simulator: sim)
        configuration.claimIdle(after: .milliseconds(200), every: .milliseconds(100))
        configuration.recovery.maxDeliveries = 5
        try RunningWorker.start(configuration)
        let replies = try await waitForReplies(client, count: 1)
        #expect(replies[0]["id"] == "poison-1")
        #expect(replies[0]["error_code"] == "dead_letter")
        let dead = try await readReplies(client, stream: "llmq:dead")
        #expect(dead.count == 1)
        #expect(dead.first?["request"] == id)
        #expect(dead.first?["field:prompt"] == "poison")
        #expect(try await sim.stats().requests == 0, "a dead-lettered entry is not sent to the backend")
        #expect(try await pendingCount(client) == 0)
    }

    @Test("a dead consumer's entries are claimed; a live consumer's long request is not", .withSimulator(.init(slots: 4, tokenMilliseconds: 100)))
    func claimsOnlyDeadWork() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, simulator: sim, consumer: "slow", concurrency: 1)
        configuration.claimIdle(after: .milliseconds(600), every: .milliseconds(100))
        try RunningWorker.start(configuration)
        // 20 tokens x 100 ms: three times the claim idle time.
        try await publish(client, [("prompt", "long"), ("max_tokens", "20"), ("id", "long-1")])
        try await Task.sleep(for: .milliseconds(300))
        configuration.consumer = "eager"
        try RunningWorker.start(configuration)
        let replies = try await waitForReplies(client, count: 1, timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await readReplies(client).count == 1)
        #expect(replies[0]["consumer"] == "slow")
        #expect(try await sim.stats().requests == 1, "the live request was claimed and run twice")
    }

    @Test("an expired request is answered with error_code=expired without calling the backend", .withSimulator(.init(tokenMilliseconds: 0)))
    func expired() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        try await publish(client, [("prompt", "too late"), ("ttl_ms", "50"), ("id", "late")])
        try await publish(client, [("prompt", "in time"), ("ttl_ms", "60000"), ("max_tokens", "2"), ("id", "fine")])
        try await Task.sleep(for: .milliseconds(150))
        try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))
        let replies = try await waitForReplies(client, count: 2)
        #expect(replies.first { $0["id"] == "late" }?["error_code"] == "expired")
        #expect(replies.first { $0["id"] == "fine" }?["status"] == "ok")
        #expect(try await sim.stats().requests == 1)
    }

    @Test("SIGTERM: in-flight requests finish and are answered, then exit 0; past the grace period they stay pending", .withSimulator(.init(slots: 4, tokenMilliseconds: 50)))
    func gracefulShutdown() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var environment = processEnvironment(redis: redis, sim: sim)
        let worker = try WorkerProcess.start(name: "graceful", environment: environment)
        for index in 0..<4 {
            try await publish(client, [("prompt", "finish me"), ("max_tokens", "20"), ("id", "g\(index)")])  // ~1 s each
        }
        try await Task.sleep(for: .milliseconds(400))
        #expect(try await pendingCount(client) == 4)
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
        let replies = try await readReplies(client)
        #expect(Set(replies.compactMap { $0["id"] }) == ["g0", "g1", "g2", "g3"])
        #expect(replies.allSatisfy { $0["status"] == "ok" })
        #expect(try await pendingCount(client) == 0)

        environment["LLMQ_SHUTDOWN_GRACE_SECONDS"] = "0.3"
        let impatient = try WorkerProcess.start(name: "impatient", environment: environment)
        for index in 0..<2 {
            try await publish(client, [("prompt", "never finished"), ("max_tokens", "100"), ("id", "slow\(index)")])  // ~5 s
        }
        try await Task.sleep(for: .milliseconds(500))
        impatient.signal(SIGTERM)
        let started = ContinuousClock.now
        #expect(await impatient.waitForExit() == 0)
        #expect(ContinuousClock.now - started < .seconds(3))
        #expect(try await readReplies(client).count == 4, "an unfinished request must not be answered")
        #expect(try await pendingCount(client) == 2, "unfinished requests stay pending for other consumers")
    }
}

@Suite("llmq command line")
struct CommandLineTests {
    @Test("an invalid configuration stops the worker before it connects: one line naming the key, exit code 2")
    func invalidConfiguration() async throws {
        let binary = try llmqExecutable().path
        let result = try await runProgram(binary, ["worker", "--concurrency", "lots"], environment: ["PATH": "/usr/bin:/bin"])
        #expect(result.status == 2)
        #expect(result.error == "llmq: invalid configuration: concurrency (from flag --concurrency): expected a whole number, got \"lots\"\n")
        let fromEnvironment = try await runProgram(binary, ["worker"], environment: ["LLMQ_BACKEND_TYPE": "olama"])
        #expect(fromEnvironment.status == 2)
        #expect(fromEnvironment.error.contains("backend.type (from environment LLMQ_BACKEND_TYPE)"))
    }

    @Test("publish --wait prints the reply; status shows the group", .withRedis, .withSimulator(.init(tokenMilliseconds: 0)))
    func publishAndStatus() async throws {
        let redis = try RedisFixture.current.server
        let sim = try SimulatorFixture.current
        try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim, consumer: "cli-worker"))
        let binary = try llmqExecutable().path
        let published = try await runProgram(binary, ["publish", "--redis-url", redis.url, "--prompt", "hello", "--max-tokens", "3", "--id", "cli-1", "--wait", "--timeout", "20"])
        #expect(published.status == 0, "\(published.error)")
        #expect(published.output.contains("status: ok"))
        #expect(published.output.contains("id: cli-1"))
        let status = try await runProgram(binary, ["status", "--redis-url", redis.url, "--json"])
        #expect(status.status == 0)
        let decoded = try JSONDecoder().decode(QueueStatus.self, from: Data(status.output.utf8))
        #expect(decoded.groupExists)
        #expect(decoded.pending == 0)
        #expect(decoded.repliesLength == 1)
        #expect(decoded.consumers.map(\.name).contains("cli-worker"))
    }
}
