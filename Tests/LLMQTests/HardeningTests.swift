import Foundation
import Glibc
import LLMQBackends
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQHTTP
import LLMQRedis
import LLMQSimulator
import LLMQWorker
import Testing

/// The worker processes' settings here: quick retries.
private let settings = [
    "LLMQ_CONCURRENCY": "4", "LLMQ_RETRY_INITIAL_BACKOFF_MS": "5", "LLMQ_RETRY_MAX_BACKOFF_MS": "100",
    "LLMQ_SHUTDOWN_GRACE_SECONDS": "10", "LLMQ_LOG_LEVEL": "notice",
]

private func pending(_ client: RedisClient, stream: String = "llmq:requests") async throws -> Int {
    try await client.send("XPENDING", stream, "llmq").array?.first?.int ?? -1
}

private func length(_ client: RedisClient, _ stream: String) async throws -> Int {
    try await client.send("XLEN", stream).int ?? -1
}

/// A chat completion as llama-server sends it.
private func completionBody(_ content: String = "fine") -> [UInt8] {
    Array(#"{"model":"m","choices":[{"message":{"role":"assistant","content":"\#(content)"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#.utf8)
}

@Suite("Hardening: hostile input from Redis and backends, bounded memory, shutdown, credentials", .serialized)
struct HardeningTests {
    @Test("an explicit entry ID near 2^63 with ttl_ms does not crash the worker; later requests are served", .withRedis, .withSimulator(.init(tokenMilliseconds: 0)))
    func hugeEntryID() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let worker = try WorkerProcess.start(name: "huge-id", environment: workerEnvironment(redis: redis, endpoint: sim.url, settings))
        // The reproduction from the issue, exactly as a user would type it.
        try await redis.redisCLI(["XADD", "llmq:requests", "9223372036854775000-0", "prompt", "x", "ttl_ms", "100000"])
        // After such an ID every auto ID shares its millisecond part.
        try await redis.redisCLI(["XADD", "llmq:requests", "*", "prompt", "y", "ttl_ms", "100000", "max_tokens", "2", "id", "after"])
        try await redis.redisCLI(["XADD", "llmq:requests", "18446744073709551615-18446744073709551615", "prompt", "z", "ttl_ms", "1"])
        let replies = try await waitForReplies(client, count: 3, timeout: .seconds(20))
        #expect(worker.isRunning, "the worker died: \(worker.output.suffix(800))")
        #expect(replies.count == 3)
        #expect(replies.allSatisfy { $0["status"] == "ok" }, "\(replies)")
        #expect(replies.first { $0["id"] == "after" }?["status"] == "ok")
        #expect(try await pending(client) == 0)
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }

    @Test("a 503 with a hostile Retry-After (1e300, nan, inf, -1, huge, a date) is retried; the worker lives", .withRedis)
    func hostileRetryAfter() async throws {
        let values = ["1e300", "nan", "inf", "-1", "99999999999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "", String(repeating: "9", count: 5000)]
        let server = try ScriptedHTTPServer { index, _ in
            // Even requests: 503 with the next hostile value; odd: the answer.
            index % 2 == 0
                ? .respond(httpResponse(status: 503, headers: [("Retry-After", values[(index / 2) % values.count])], body: Array("busy".utf8)))
                : .respond(httpResponse(status: 200, headers: [("Content-Type", "application/json")], body: completionBody()))
        }
        defer { server.stop() }
        let (redis, client) = try RedisFixture.current
        let worker = try WorkerProcess.start(
            name: "retry-after", environment: workerEnvironment(redis: redis, endpoint: server.url, settings, ["LLMQ_CONCURRENCY": "1"]))
        for index in values.indices {
            try await publish(client, [("prompt", "hi"), ("id", "r\(index)")])
        }
        let replies = try await waitForReplies(client, count: values.count, timeout: .seconds(30))
        #expect(worker.isRunning, "the worker died: \(worker.output.suffix(800))")
        #expect(replies.allSatisfy { $0["status"] == "ok" && $0["attempts"] == "2" }, "\(replies)")
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }

    @Test("answered requests are deleted: XLEN of the request stream is what is not answered yet", .withRedis, .withSimulator(.init(slots: 8, tokenMilliseconds: 0)))
    func answeredEntriesAreDeleted() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, simulator: sim, concurrency: 8)
        configuration.streams.deadMaxLength = 5
        let worker = try RunningWorker.start(configuration)
        try await publish(client, count: 200, prompt: "p", maxTokens: 2)
        _ = try await waitForReplies(client, count: 200)
        #expect(try await length(client, "llmq:requests") == 0)
        #expect(try await pending(client) == 0)
        await worker.stop()

        // keepAnswered copies answered requests to a history stream, trimmed to about
        // answeredMaxLength; the request stream still holds only what is not answered.
        configuration.streams.keepAnswered = true
        configuration.streams.answeredMaxLength = 50
        try RunningWorker.start(configuration)
        try await publish(client, count: 300, prompt: "k", maxTokens: 2, ids: "k")
        let replies = try await waitForReplies(client, count: 500)
        #expect(try await length(client, "llmq:requests") == 0)
        let kept = try await length(client, "llmq:answered")
        #expect(kept >= 50 && kept < 300, "kept \(kept) entries")
        let newest = try await client.send("XREVRANGE", "llmq:answered", "+", "-", "COUNT", "1").array?.first?.array?[1].pairs ?? []
        let fields = Dictionary(newest.map { ($0.name.string ?? "", $0.value.string ?? "") }, uniquingKeysWith: { a, _ in a })
        #expect(fields["prompt"]?.hasPrefix("k") == true)
        #expect(replies.contains { $0["request"] == fields["request"] }, "a history entry names its request's entry ID")
    }

    @Test("an entry deleted while a worker runs it still gets the finished answer, once", .withRedis, .withSimulator(.init(slots: 2, tokenMilliseconds: 100)))
    func deletedWhileRunning() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, simulator: sim)
        // Refreshed every 200 ms while it runs: the refresh must not drop the deleted entry.
        configuration.claimIdle(after: .milliseconds(600), every: .milliseconds(100))
        try RunningWorker.start(configuration)
        let deleted = try await publish(client, [("prompt", "deleted"), ("max_tokens", "15"), ("id", "xdel")])
        let trimmed = try await publish(client, [("prompt", "trimmed"), ("max_tokens", "15"), ("id", "trim")])
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await pending(client) == 2)
        _ = try await client.send("XDEL", "llmq:requests", deleted)
        _ = try await client.send("XTRIM", "llmq:requests", "MAXLEN", "0")
        #expect(try await length(client, "llmq:requests") == 0)
        let replies = try await waitForReplies(client, count: 2, timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await readReplies(client).count == 2)
        #expect(replies.first { $0["request"] == deleted }?["status"] == "ok")
        #expect(replies.first { $0["request"] == trimmed }?["status"] == "ok")
        #expect(try await pending(client) == 0)
    }

    @Test("deleted while running, taken over by another worker's claim: still exactly one reply", .withRedis, .withSimulator(.init(slots: 8, tokenMilliseconds: 100)))
    func deletedWhileRunningWithTwoWorkers() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, simulator: sim)
        configuration.claimIdle(after: .milliseconds(300), every: .milliseconds(50))
        for _ in 0..<2 { try RunningWorker.start(configuration) }
        // 15 tokens x 100 ms: five times the claim idle time, so a claim takes each deleted
        // entry out of the group while it runs; the owner's answer and the claimer's
        // request_lost race, and the lost mode's marker lets one through.
        let ids = try await publish(client, count: 6, prompt: "race ", maxTokens: 15)
        try await Task.sleep(for: .milliseconds(200))
        for id in ids { _ = try await client.send("XDEL", "llmq:requests", id) }
        _ = try await waitForReplies(client, count: 6, timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(2000))
        let replies = try await readReplies(client)
        print("deleted while running, two workers: \(replies.filter { $0["status"] == "ok" }.count) finished answers, \(replies.filter { $0["error_code"] == "request_lost" }.count) request_lost")
        #expect(replies.count == 6, "\(replies)")
        #expect(Set(replies.compactMap { $0["request"] }) == Set(ids))
        #expect(replies.allSatisfy { $0["status"] == "ok" || $0["error_code"] == "request_lost" })
        #expect(try await pending(client) == 0)
    }

    @Test("an entry deleted while pending on a dead consumer gets request_lost, once", .withRedis, .withSimulator(.init(tokenMilliseconds: 0)))
    func deletedWhilePendingOnDeadConsumer() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        let lost = try await publish(client, [("prompt", "lost"), ("id", "lost-1")])
        let kept = try await publish(client, [("prompt", "kept"), ("max_tokens", "2"), ("id", "kept-1")])
        // A consumer that took both and died; then the producer deleted one.
        try await abandonNextEntries(client, count: 2)
        _ = try await client.send("XDEL", "llmq:requests", lost)
        var configuration = workerConfiguration(redis: redis, simulator: sim)
        configuration.claimIdle(after: .milliseconds(200), every: .milliseconds(100))
        for _ in 0..<2 { try RunningWorker.start(configuration) }
        let replies = try await waitForReplies(client, count: 2)
        try await Task.sleep(for: .milliseconds(600))
        let final = try await readReplies(client)
        #expect(final.count == 2, "\(final)")
        let lostReply = final.first { $0["request"] == lost }
        #expect(lostReply?["error_code"] == "request_lost")
        #expect(lostReply?["id"] == lost, "the caller's id went with the entry; the entry ID stands in")
        #expect(replies.first { $0["request"] == kept }?["status"] == "ok")
        #expect(try await pending(client) == 0)
    }

    @Test("llmq:dead holding a string: every dead-lettered request still gets exactly one reply, and says so", .withRedis, .withSimulator(.init(tokenMilliseconds: 0)))
    func deadLetterStreamOfWrongType() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        _ = try await client.send("SET", "llmq:dead", "not a stream")
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        var ids: [String] = []
        for index in 0..<5 {
            // A huge poison entry too: the dead-letter copy is bounded.
            let padding = String(repeating: "x", count: index == 0 ? 600_000 : 10)
            let id = try await publish(client, [("prompt", "poison \(index)"), ("id", "poison-\(index)"), ("padding", padding)])
            try await abandonNextEntries(client, deliveries: 9)
            ids.append(id)
        }
        var configuration = workerConfiguration(redis: redis, simulator: sim)
        configuration.claimIdle(after: .milliseconds(100), every: .milliseconds(50))
        configuration.recovery.maxDeliveries = 5
        let worker = try RunningWorker.start(configuration)
        _ = try await waitForReplies(client, count: 5)
        try await Task.sleep(for: .milliseconds(500))
        let replies = try await readReplies(client)
        #expect(replies.count == 5)
        #expect(Set(replies.compactMap { $0["request"] }) == Set(ids))
        #expect(replies.allSatisfy { $0["error_code"] == "dead_letter" && $0["dead_letter_error"]?.contains("holds a string") == true })
        #expect(try await pending(client) == 0)
        #expect(try await client.send("GET", "llmq:dead").string == "not a stream")

        // A stream again: records come back, bounded. (No worker runs while the ghost takes the
        // entry, or a worker could take it first.)
        await worker.stop()
        _ = try await client.send("DEL", "llmq:dead")
        let id = try await publish(client, [("prompt", "big"), ("id", "big"), ("padding", String(repeating: "y", count: 400_000))])
        try await abandonNextEntries(client, deliveries: 9)
        try RunningWorker.start(configuration)
        _ = try await waitForReplies(client, count: 6)
        let dead = try await readReplies(client, stream: "llmq:dead")
        #expect(dead.count == 1)
        #expect(dead.first?["request"] == id)
        #expect(dead.first?["field:prompt"] == "big")
        #expect(dead.first?["field:padding"] == nil)
        #expect(dead.first?["truncated"]?.hasPrefix("1 fields") == true)
    }

    @Test("a wrong Redis password or no password stops the worker at start: one line, exit code 3", .withRedis)
    func wrongCredentials() async throws {
        let (redis, client) = try RedisFixture.current
        _ = try await client.send("CONFIG", "SET", "requirepass", "s3cret")
        for (url, what) in [("redis://:wrong@127.0.0.1:\(redis.port)", "WRONGPASS"), (redis.url, "NOAUTH"), ("redis://nobody:s3cret@127.0.0.1:\(redis.port)", "WRONGPASS")] {
            let worker = try WorkerProcess.start(
                name: "credentials", environment: ["LLMQ_REDIS_URL": url, "LLMQ_BACKEND_ENDPOINT": "http://127.0.0.1:9"])
            let status = await worker.waitForExit(timeout: .seconds(10))
            if status == nil { worker.signal(SIGKILL) }
            let output = worker.output
            #expect(status == 3, "\(url): still retrying or wrong exit code: \(output.suffix(600))")
            #expect(output.contains("llmq: Redis refused the credentials"), "\(output.suffix(600))")
            #expect(output.contains(what), "\(output.suffix(600))")
            #expect(!output.contains("s3cret") && !output.contains("wrong@"), "a password reached the log")
        }
        let good = RedisConfiguration(host: "127.0.0.1", port: redis.port, password: "s3cret")
        let authenticated = RedisClient(configuration: good)
        defer { authenticated.shutdown() }
        _ = try await authenticated.send("CONFIG", "SET", "requirepass", "")
    }

    @Test("a second SIGTERM ends the worker at once; its request stays pending", .withRedis, .withSimulator(.init(tokenMilliseconds: 100)))
    func secondSignal() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let worker = try WorkerProcess.start(name: "twice", environment: workerEnvironment(redis: redis, endpoint: sim.url, settings, ["LLMQ_SHUTDOWN_GRACE_SECONDS": "60"]))
        try await publish(client, [("prompt", "long"), ("max_tokens", "200"), ("id", "long")])  // ~20 s
        try await Task.sleep(for: .milliseconds(800))
        #expect(try await pending(client) == 1)
        worker.signal(SIGTERM)
        try await Task.sleep(for: .milliseconds(300))
        #expect(worker.isRunning, "the first SIGTERM waits for the request in flight")
        let started = ContinuousClock.now
        worker.signal(SIGTERM)
        let status = await worker.waitForExit(timeout: .seconds(5))
        #expect(status == 128 + SIGTERM, "\(worker.output.suffix(500))")
        #expect(ContinuousClock.now - started < .seconds(3))
        #expect(try await readReplies(client).isEmpty)
        #expect(try await pending(client) == 1)
    }

    @Test("a cancelled task never starts a transfer")
    func cancelledBeforeStart() async throws {
        let server = try ScriptedHTTPServer { _, _ in .respond(httpResponse(status: 200, body: completionBody())) }
        defer { server.stop() }
        let client = HTTPClient()
        defer { client.shutdown() }
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.execute(HTTPRequest(method: .post, url: server.url + "/v1/chat/completions", body: [1]))
        }
        await #expect(throws: HTTPClientError.self) { try await task.value }
        try await Task.sleep(for: .milliseconds(200))
        #expect(server.requests == 0)
        // The client still works.
        let response = try await client.execute(HTTPRequest(method: .post, url: server.url, body: [1]))
        #expect(response.status == 200)
    }

    @Test("a cancelled breaker probe releases the probe: the next request probes and succeeds")
    func cancelledProbe() async throws {
        // First request fails (opens the circuit at threshold 1), the probe stalls, then all succeed.
        let server = try ScriptedHTTPServer { index, _ in
            switch index {
            case 0: .respond(httpResponse(status: 500, body: Array("down".utf8)))
            case 1: .stall(Array("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".utf8), limit: .seconds(10))
            default: .respond(httpResponse(status: 200, body: completionBody()))
            }
        }
        defer { server.stop() }
        let backend = try makeChatBackend(BackendConfiguration(kind: .llamaCpp, endpoint: server.url), maxConcurrentRequests: 4)
        let resilient = ResilientBackend(
            primary: backend, fallback: nil, retry: .init(maxAttempts: 1, initialBackoff: .milliseconds(1), maxBackoff: .milliseconds(1)),
            breaker: .init(failureThreshold: 1, openDuration: .milliseconds(100)), logger: .init(label: "test"))
        defer { resilient.shutdown() }
        let request = ChatRequest(messages: [ChatMessage(role: .user, content: "hi")], maxTokens: 2)
        await #expect(throws: ResilientBackend.Failure.self) { try await resilient.complete(request) }
        #expect(resilient.isPrimaryOpen)
        try await Task.sleep(for: .milliseconds(150))
        let probe = Task { try await resilient.complete(request) }
        while server.requests < 2 { try await Task.sleep(for: .milliseconds(10)) }
        probe.cancel()
        _ = await probe.result
        let outcome = try await resilient.complete(request, deadline: .now + .seconds(2))
        #expect(outcome.completion.content == "fine")
        #expect(!resilient.isPrimaryOpen)
    }
}
