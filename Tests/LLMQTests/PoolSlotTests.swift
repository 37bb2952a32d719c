import Foundation
import Glibc
import LLMQBackends
import LLMQRedis
import LLMQSimulator
import LLMQTestSupport
@testable import LLMQWorker
import Testing

/// Worker processes with one configuration, as `docker compose up --scale worker=3` runs them.
private func poolEnvironment(redis: RedisServer, sim: RunningSimulator?, pool: Bool, leaseMs: Int = 5000) -> [String: String] {
    [
        "LLMQ_REDIS_URL": redis.url, "LLMQ_BACKEND_TYPE": "llama-cpp", "LLMQ_BACKEND_ENDPOINT": sim?.url ?? "",
        "LLMQ_CONCURRENCY": "8", "LLMQ_READ_BLOCK_MS": "200", "LLMQ_SLOTS_POOL": String(pool),
        "LLMQ_SLOTS_LEASE_MS": String(leaseMs), "LLMQ_RECOVERY_CLAIM_MIN_IDLE_MS": "3000",
        "LLMQ_RECOVERY_CLAIM_INTERVAL_MS": "250", "LLMQ_LOG_LEVEL": "notice",
    ]
}

/// Leases in the pool's sorted set for the sim's backend that have not expired.
private func liveLeases(_ client: RedisClient) async throws -> Int {
    let time = try await client.send("TIME").array ?? []
    let seconds = Int(time.first?.string ?? "") ?? 0
    let micros = Int(time.last?.string ?? "") ?? 0
    let now = seconds * 1000 + micros / 1000
    return try await client.send("ZCOUNT", "llmq:slots:llama-cpp", String(now), "+inf").int ?? -1
}

@Suite("Pool-wide slots: one configuration for any number of workers", .serialized)
struct PoolSlotTests {
    @Test("the ledger in Redis: never more leases than slots, weights among free backends, expired leases dropped and reported lost, released ones taken again", .withRedis)
    func ledger() async throws {
        let (_, client) = try RedisFixture.current
        let short = PoolSlotLedger(client: client, prefix: "llmq:slots", consumer: "short", leaseDuration: .milliseconds(300))
        let long = PoolSlotLedger(client: client, prefix: "llmq:slots", consumer: "long", leaseDuration: .seconds(30))
        let small = [SlotCandidate(backend: "x", slots: 3, weight: 3), SlotCandidate(backend: "y", slots: 1, weight: 1)]

        let first = try await short.acquire(small, count: 10)
        #expect(first.count == 4 && first.filter { $0.backend == "x" }.count == 3, "\(first)")
        #expect(Set(first.map(\.id)).count == 4)
        #expect(try await long.acquire(small, count: 1).isEmpty, "every slot is held")

        await short.release(first.filter { $0.backend == "y" })
        let y = try await long.acquire(small, count: 2)
        #expect(y.map(\.backend) == ["y"])

        // The short leases are not renewed: the next acquire drops them, and their renewal says so.
        try await Task.sleep(for: .milliseconds(450))
        let x = try await long.acquire(small, count: 5)
        #expect(x.count == 3 && x.allSatisfy { $0.backend == "x" }, "\(x)")
        #expect(try await short.renew() == 3)
        #expect(short.held == 0)
        #expect(try await long.renew() == 0)
        #expect(long.held == 4)
        await long.release(x + y)
        #expect(long.held == 0)
        #expect(try await client.send("ZCARD", "llmq:slots:x").int == 0)

        // Slots to spare: the starts follow the weights (3:1), as one worker's selection does.
        let roomy = [SlotCandidate(backend: "x", slots: 100, weight: 3), SlotCandidate(backend: "y", slots: 100, weight: 1)]
        let weighted = try await long.acquire(roomy, count: 8)
        #expect(weighted.filter { $0.backend == "x" }.count == 6, "\(weighted.map(\.backend))")
        // A backend behind its weight in the worker's recent starts gets the next slot.
        let behind = [SlotCandidate(backend: "x", slots: 100, weight: 3, starts: 30), SlotCandidate(backend: "y", slots: 100, weight: 1, starts: 2)]
        #expect(try await long.acquire(behind, count: 1).map(\.backend) == ["y"])
    }

    @Test("conversation homes with bounded loads: all preferring one backend, it gets at most 1.25x its share; a home stays; a home that leaves is replaced", .withRedis)
    func boundedHomes() async throws {
        let (_, client) = try RedisFixture.current
        let ledger = PoolSlotLedger(client: client, prefix: "llmq:slots", consumer: "c", leaseDuration: .seconds(5))
        let both = [(backend: "a", weight: 1.0), (backend: "b", weight: 1.0)]
        var homes: [String] = []
        for conversation in 0..<20 { homes.append(try await ledger.home(of: "conversation \(conversation)", candidates: both)) }
        let onA = homes.filter { $0 == "a" }.count
        #expect((10...13).contains(onA), "every conversation prefers a, which may hold 1.25 x half: \(onA) of 20")
        for conversation in 0..<20 {
            #expect(try await ledger.home(of: "conversation \(conversation)", candidates: both) == homes[conversation])
        }
        // a's breaker opened: its conversations move to b, the others stay.
        let moved = try await ledger.home(of: "conversation \(homes.firstIndex(of: "a")!)", candidates: [(backend: "b", weight: 1.0)])
        #expect(moved == "b")
    }

    @Test(
        "3 workers at concurrency 8 over a 4-slot server, one more joining mid-run: never more than 4 requests at the server; without the pool, they queue there",
        .withRedis, .withSimulator(SimulatorConfiguration(slots: 4, tokenMilliseconds: 4)), arguments: [true, false])
    func neverOverAdmits(pool: Bool) async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let environment = poolEnvironment(redis: redis, sim: sim, pool: pool)
        var workers = try (1...3).map { try WorkerProcess.start(name: "pool-\(pool)-\($0)", environment: environment) }
        let count = 240
        for index in 0..<count {
            try await publish(client, [("prompt", "job \(index)"), ("max_tokens", "20"), ("id", "job-\(index)")])
        }
        try await Task.sleep(for: .milliseconds(500))
        workers.append(try WorkerProcess.start(name: "pool-\(pool)-4", environment: environment))
        // What an operator sees meanwhile: the slots held across the pool. Calls started together
        // end together, so one reading can fall in the moment between calls when none is held:
        // every reading within the slots, and some reading with one held.
        var readings: [[String: Int]?] = []
        var status = (status: Int32(0), stdout: "", stderr: "")
        for _ in 0..<5 {
            status = try runLLMQ(["status", "--json"], environment: environment)
            readings.append((try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])?["poolSlotsHeld"] as? [String: Int])
        }
        let held = readings.last ?? nil
        if pool {
            #expect(readings.allSatisfy { $0.map { (0...4).contains($0["llama-cpp"] ?? -1) } == true }, "llmq status: \(readings) \(status.stderr)")
            #expect(readings.contains { ($0?["llama-cpp"] ?? 0) >= 1 }, "llmq status: \(readings) \(status.stderr)")
            let text = try runLLMQ(["status"], environment: environment).stdout
            #expect(text.contains("pool slots held now (requests at each backend, all workers): llama-cpp "), "\(text)")
        } else {
            #expect(readings.allSatisfy { $0 == nil } && held == nil, "no pool, no slots to show: \(status.stdout)")
        }
        let replies = try await waitForReplies(client, count: count, timeout: .seconds(90))
        #expect(Set(replies.compactMap { $0["id"] }).count == count)
        #expect(replies.allSatisfy { $0["status"] == "ok" })
        let stats = try await sim.stats()
        if pool {
            #expect(stats.maxQueued == 0, "requests waited inside the server: \(stats)")
            #expect(stats.maxInFlight == 4, "the pool should keep every slot busy: \(stats)")
            #expect(try await liveLeases(client) == 0, "every lease is given back")
        } else {
            // What the pool prevents: each worker admits up to its own concurrency.
            #expect(stats.maxQueued > 4, "without the pool, workers over-admit: \(stats)")
        }
        for worker in workers {
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit() == 0, "worker did not exit cleanly: \(worker.output.suffix(500))")
        }
    }

    @Test("workers started before their llama-server (as compose starts them) learn its slots when it comes up, and then share them", .withRedis)
    func serverUpAfterWorkers() async throws {
        let (redis, client) = try RedisFixture.current
        let port = try freePort()
        var environment = poolEnvironment(redis: redis, sim: nil, pool: true, leaseMs: 600)
        environment["LLMQ_BACKEND_ENDPOINT"] = "http://127.0.0.1:\(port)"
        environment["LLMQ_LOG_LEVEL"] = "info"  // for "backend slots"
        let workers = try (1...3).map { try WorkerProcess.start(name: "late-\($0)", environment: environment) }
        try await Task.sleep(for: .milliseconds(500))
        let sim = Process()
        sim.executableURL = try llmqExecutable()
        sim.arguments = ["sim", "--port", String(port), "--slots", "3", "--token-ms", "10"]
        sim.standardOutput = FileHandle.nullDevice
        sim.standardError = FileHandle.nullDevice
        try sim.run()
        defer { sim.terminate() }
        _ = try await waitForHTTP("http://127.0.0.1:\(port)/health", status: 200)
        // Asked again every third of the lease time (200 ms).
        try await Task.sleep(for: .milliseconds(800))
        #expect(workers.allSatisfy { $0.output.contains("backend slots") }, "\(workers.map { $0.output.suffix(400) })")
        let count = 60
        for index in 0..<count {
            try await publish(client, [("prompt", "job \(index)"), ("max_tokens", "20"), ("id", "job-\(index)")])
        }
        let replies = try await waitForReplies(client, count: count, timeout: .seconds(60))
        #expect(replies.allSatisfy { $0["status"] == "ok" })
        let (status, body) = try await httpGet("http://127.0.0.1:\(port)/sim/stats")
        let stats = try JSONDecoder().decode(SimulatorStats.self, from: Data(body.utf8))
        #expect(status == 200 && stats.maxQueued == 0 && stats.maxInFlight == 3, "\(stats)")
        for worker in workers { worker.signal(SIGKILL) }
    }

    @Test("a worker killed with leases held: its slots come back within the lease time, every request is answered once, the server is never over-admitted",
        .withRedis, .withSimulator(SimulatorConfiguration(slots: 4, tokenMilliseconds: 10)))
    func killedWorkerLeasesExpire() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let environment = poolEnvironment(redis: redis, sim: sim, pool: true, leaseMs: 1000)
        let workers = try (1...2).map { try WorkerProcess.start(name: "lease-\($0)", environment: environment) }
        let count = 200  // 10 s of work for 4 slots of 200 ms: plenty left when the worker is killed
        for index in 0..<count {
            try await publish(client, [("prompt", "job \(index)"), ("max_tokens", "20"), ("id", "job-\(index)")])
        }
        try await Task.sleep(for: .milliseconds(600))
        #expect(try await liveLeases(client) > 0)
        workers[0].signal(SIGKILL)
        _ = await workers[0].waitForExit()
        // The survivor takes every slot once the dead worker's leases expire (1 s), long before
        // its entries can be claimed (3 s): the slots do not wait for the claim.
        try await Task.sleep(for: .milliseconds(1300))
        // A slot is free for a moment between one call and the next: the most held in 400 ms.
        var held = 0
        for _ in 0..<20 {
            held = max(held, try await liveLeases(client))
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(held == 4, "the survivor should hold every slot now, holds \(held)")
        let replies = try await waitForReplies(client, count: count, timeout: .seconds(60))
        #expect(Set(replies.compactMap { $0["id"] }).count == count)
        #expect(replies.allSatisfy { $0["status"] == "ok" })
        #expect(try await sim.stats().maxQueued == 0)
        workers[1].signal(SIGTERM)
        #expect(await workers[1].waitForExit() == 0)
        #expect(try await liveLeases(client) == 0)
    }
}
