import Foundation
import Glibc
@testable import LLMQClient
import LLMQRedis
import LLMQSimulator
import LLMQTestSupport
@testable import LLMQWorker
import Testing

/// Worker processes with one configuration (as `docker compose up --scale` runs them), fair
/// intake on or off, and its limits.
private func fairEnvironment(
    redis: RedisServer, sim: RunningSimulator, fair: Bool, maxInFlight: Int = 0, perMinute: Int = 0
) -> [String: String] {
    [
        "LLMQ_REDIS_URL": redis.url, "LLMQ_BACKEND_TYPE": "llama-cpp", "LLMQ_BACKEND_ENDPOINT": sim.url,
        "LLMQ_CONCURRENCY": "8", "LLMQ_READ_BLOCK_MS": "200", "LLMQ_USERS_FAIR": String(fair),
        "LLMQ_USERS_MAX_IN_FLIGHT": String(maxInFlight), "LLMQ_USERS_REQUESTS_PER_MINUTE": String(perMinute),
        "LLMQ_RECOVERY_CLAIM_MIN_IDLE_MS": "3000", "LLMQ_RECOVERY_CLAIM_INTERVAL_MS": "250", "LLMQ_LOG_LEVEL": "notice",
    ]
}

private func stop(_ workers: [WorkerProcess]) async {
    for worker in workers {
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0, "worker did not exit cleanly: \(worker.output.suffix(500))")
    }
}

/// The replies' `id`s in the order they were written.
private func answeredOrder(_ client: RedisClient) async throws -> [String] {
    try await readReplies(client).compactMap { $0["id"] }
}

/// Fair intake's own state empties: no user waiting, none running (a killed worker's marks
/// expire after the claim idle time, 3 s here), nothing pending.
private func fairStateIsEmpty(_ client: RedisClient) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(6)
    while true {
        let users = try await client.send("ZCARD", "llmq:requests:fair:users").int
        let busy = try await client.send("ZCARD", "llmq:requests:fair:busy").int
        let pending = try await client.send("XPENDING", "llmq:requests", "llmq").array?.first?.int
        if users == 0 && busy == 0 && pending == 0 { return true }
        if ContinuousClock.now > deadline {
            Issue.record("fair state left: \(users ?? -1) users waiting, \(busy ?? -1) busy, \(pending ?? -1) pending")
            return false
        }
        try await Task.sleep(for: .milliseconds(100))
    }
}

@Suite("Fair intake: the users of a queue served in turn by the whole pool", .serialized)
struct FairIntakeTests {
    @Test(
        "one user floods, nine more send one each: with fair intake the nine are answered next, without it after the flood; one user alone gets every slot",
        .withRedis, .withSimulator(SimulatorConfiguration(slots: 4, tokenMilliseconds: 4)), arguments: [true, false])
    func usersTakeTurns(fair: Bool) async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let environment = fairEnvironment(redis: redis, sim: sim, fair: fair)
        let workers = try (1...2).map { try WorkerProcess.start(name: "fair-\(fair)-\($0)", environment: environment) }
        let flood = 120
        for index in 0..<flood {
            try await publish(client, [("prompt", "flood \(index)"), ("max_tokens", "20"), ("id", "a-\(index)"), ("user", "a")])
        }
        // The flood is under way.
        let started = ContinuousClock.now
        while (try await client.send("XLEN", "llmq:replies").int ?? 0) < 8, ContinuousClock.now < started + .seconds(30) {
            try await Task.sleep(for: .milliseconds(10))
        }
        // What an operator sees: the flooding user, with some in flight and the rest waiting.
        let status = try runLLMQ(["status", "--json"], environment: environment)
        let json = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        let top = (json?["topUsers"] as? [[String: Any]])?.first
        if fair {
            #expect(top?["user"] as? String == "a" && (top?["waiting"] as? Int ?? 0) > 0, "llmq status: \(status.stdout.suffix(400))")
            #expect((1...4).contains(top?["inFlight"] as? Int ?? -1), "llmq status: \(status.stdout.suffix(400))")
            let text = try runLLMQ(["status"], environment: environment).stdout
            #expect(text.contains("busiest users (fair intake, all workers): a "), "\(text)")
        } else {
            #expect(json?["topUsers"] == nil, "no fair intake, no users to show")
        }
        let mark = try await client.send("XLEN", "llmq:replies").int ?? 0
        let nine = (1...9).map { "u\($0)" }
        for user in nine {
            try await publish(client, [("prompt", "hello"), ("max_tokens", "20"), ("id", "\(user)-0"), ("user", user)])
        }
        // No user, and a user too long to be one: the first waits with the unnamed, the second
        // is refused with a reason.
        try await publish(client, [("prompt", "anonymous"), ("max_tokens", "20"), ("id", "none-0")])
        try await publish(client, [("prompt", "long"), ("id", "long-0"), ("user", String(repeating: "x", count: 300))])
        let total = flood + nine.count + 2
        let replies = try await waitForReplies(client, count: total, timeout: .seconds(90))
        #expect(Set(replies.compactMap { $0["id"] }).count == total, "exactly one reply each")
        let long = replies.first { $0["id"] == "long-0" }
        #expect(long?["error_code"] == "invalid_request" && long?["error"]?.contains("user must be") == true, "\(long ?? [:])")
        #expect(replies.filter { $0["id"] != "long-0" }.allSatisfy { $0["status"] == "ok" })

        let order = Array(try await answeredOrder(client).dropFirst(mark))
        let lastOfNine = order.lastIndex { id in nine.contains { id.hasPrefix("\($0)-") } } ?? order.count
        let floodBefore = order[..<lastOfNine].filter { $0.hasPrefix("a-") }.count
        if fair {
            // At most what was already in flight, and what other workers took in between.
            #expect(floodBefore <= 12, "the flood went ahead of the nine \(floodBefore) times: \(order.prefix(30))")
        } else {
            #expect(floodBefore >= 60, "without fair intake the nine wait for the flood: \(floodBefore)")
        }
        let stats = try await sim.stats()
        #expect(stats.maxInFlight == 4 && stats.maxQueued == 0, "one user alone keeps every slot busy: \(stats)")
        if fair { #expect(try await fairStateIsEmpty(client)) }
        await stop(workers)
    }

    @Test(
        "users.maxInFlight holds across the pool, the other users' work goes on; users.requestsPerMinute holds one user back, not another",
        .withRedis, .withSimulator(SimulatorConfiguration(slots: 8, tokenMilliseconds: 4)))
    func limits() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var workers = try (1...3).map {
            try WorkerProcess.start(name: "limit-\($0)", environment: fairEnvironment(redis: redis, sim: sim, fair: true, maxInFlight: 2))
        }
        for index in 0..<24 {
            for user in ["a", "b"] {
                try await publish(client, [("prompt", "job"), ("max_tokens", "40"), ("id", "\(user)-\(index)"), ("user", user)])
            }
        }
        var most: [String: Int] = [:]
        let deadline = ContinuousClock.now + .seconds(60)
        while (try await client.send("XLEN", "llmq:replies").int ?? 0) < 48, ContinuousClock.now < deadline {
            let now = try await QueueStatus.redisMilliseconds(client)
            for user in ["a", "b"] {
                let running = try await client.send("ZCOUNT", "llmq:requests:fair:running:\(user)", "(\(now)", "+inf").int ?? 0
                most[user] = max(most[user] ?? 0, running)
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        let replies = try await waitForReplies(client, count: 48, timeout: .seconds(5))
        #expect(Set(replies.compactMap { $0["id"] }).count == 48 && replies.allSatisfy { $0["status"] == "ok" })
        #expect(most == ["a": 2, "b": 2], "most in flight per user, pool-wide: \(most)")
        let stats = try await sim.stats()
        #expect(stats.maxInFlight == 4, "two users at two each: \(stats)")
        await stop(workers)

        // A budget of 30 a minute: 30 at once, then one every 2 s; another user is not held back.
        _ = try await client.send("FLUSHALL")
        workers = try (1...2).map {
            try WorkerProcess.start(name: "rate-\($0)", environment: fairEnvironment(redis: redis, sim: sim, fair: true, perMinute: 30))
        }
        for index in 0..<32 {
            try await publish(client, [("prompt", "job"), ("max_tokens", "4"), ("id", "a-\(index)"), ("user", "a")])
        }
        _ = try await waitForReplies(client, count: 30, timeout: .seconds(30))
        try await publish(client, [("prompt", "job"), ("max_tokens", "4"), ("id", "b-0"), ("user", "b")])
        let all = try await waitForReplies(client, count: 33, timeout: .seconds(30))
        let order = all.compactMap { $0["id"] }
        #expect(Set(order).count == 33)
        #expect(order.firstIndex(of: "b-0")! < 31, "b waited behind a's budget: \(order.suffix(4))")
        #expect(try await fairStateIsEmpty(client))
        await stop(workers)
    }

    @Test(
        "an entry waiting its turn keeps its delivery count: one delivered too often is dead-lettered when its turn comes",
        .withRedis, .withSimulator(SimulatorConfiguration(slots: 4, tokenMilliseconds: 1)))
    func deadLetterAfterWaiting() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        let poison = try await publish(client, [("prompt", "again"), ("id", "poison"), ("user", "p")])
        try await publish(client, [("prompt", "fine"), ("id", "fine"), ("user", "q")])
        // Staged (a take of none), then delivered as often as crashed workers would have.
        _ = try await client.send(
            "EVAL", Scripts.fairTake.source, "1", "llmq:requests", "llmq", "nobody", "llmq:fair", "llmq:requests:fair:", "0", "500",
            "0", "0", "60000", "llmq:requests:lost:", "86400000")
        let staged = try await client.send("XPENDING", "llmq:requests", "llmq", "-", "+", "10", "llmq:fair").array?.count
        #expect(staged == 2)
        _ = try await client.send("XCLAIM", "llmq:requests", "llmq", "llmq:fair", "0", poison, "RETRYCOUNT", "9", "JUSTID")
        var environment = fairEnvironment(redis: redis, sim: sim, fair: true)
        environment["LLMQ_RECOVERY_MAX_DELIVERIES"] = "3"
        let worker = try WorkerProcess.start(name: "dead-letter", environment: environment)
        let replies = try await waitForReplies(client, count: 2, timeout: .seconds(30))
        let byID = Dictionary(uniqueKeysWithValues: replies.map { ($0["id"] ?? "", $0) })
        #expect(byID["poison"]?["error_code"] == "dead_letter", "\(byID["poison"] ?? [:])")
        #expect(byID["fine"]?["status"] == "ok")
        #expect(try await client.send("XLEN", "llmq:dead").int == 1)
        #expect(try await fairStateIsEmpty(client))
        await stop([worker])
    }

    @Test(
        "a worker killed with fair requests in flight and waiting: every request answered exactly once; one deleted while waiting is answered request_lost",
        .withRedis, .withSimulator(SimulatorConfiguration(slots: 4, tokenMilliseconds: 4)))
    func crashAndDeletion() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let environment = fairEnvironment(redis: redis, sim: sim, fair: true)
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        var workers = try (1...3).map { try WorkerProcess.start(name: "crash-\($0)", environment: environment) }
        let count = 150
        var ids: [String] = []
        for index in 0..<count {
            ids.append(try await publish(client, [("prompt", "job"), ("max_tokens", "20"), ("id", "j-\(index)"), ("user", "user-\(index % 5)")]))
        }
        // The last entry waits under the staging consumer: delete it there.
        let last = ids[count - 1]
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let pending = try await client.send("XPENDING", "llmq:requests", "llmq", last, last, "1")
            if pending.array?.first?.array?[1].string == "llmq:fair" { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        _ = try await client.send("XDEL", "llmq:requests", last)
        try await Task.sleep(for: .milliseconds(300))
        workers[0].signal(SIGKILL)
        _ = await workers[0].waitForExit()
        workers.removeFirst()
        let replies = try await waitForReplies(client, count: count, timeout: .seconds(60))
        let byID = Dictionary(grouping: replies, by: { $0["request"] ?? "" })
        #expect(replies.count == count && byID.count == count, "exactly one reply each: \(replies.count) replies, \(byID.count) requests")
        let lost = replies.filter { $0["error_code"] == "request_lost" }
        #expect(lost.count == 1 && lost.first?["request"] == last, "\(lost)")
        #expect(replies.filter { $0["error_code"] != "request_lost" }.allSatisfy { $0["status"] == "ok" })
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await readReplies(client).count == count, "no late second reply")
        #expect(try await fairStateIsEmpty(client))
        await stop(workers)
    }
}
