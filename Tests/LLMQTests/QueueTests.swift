import Foundation
import Glibc
import LLMQBackends
@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
import LLMQRedis
import LLMQSimulator
import LLMQTestSupport
@testable import LLMQWorker
import Testing

/// When each request started: its entry ID's time plus its `queue_ms`.
private func startMilliseconds(_ reply: [String: String]) -> Double {
    let published = Double(reply["request"]?.split(separator: "-").first ?? "") ?? 0
    return published + (Double(reply["queue_ms"] ?? "") ?? 0)
}

/// Four slots, 40 ms a request: the worker's four slots are the backend's four.
private let fourSlots = SimulatorConfiguration(slots: 4, tokenMilliseconds: 5)

@Suite("Queues: priorities, weights, minimum shares", .serialized)
struct QueueTests {
    /// Publishes to both queues, runs one worker over them (on the test's Redis and `fourSlots`
    /// simulator) until every request is answered; returns each queue's replies.
    private func run(
        high: WorkerConfiguration.Queue, low: WorkerConfiguration.Queue, highCount: Int = 40, lowCount: Int = 20
    ) async throws -> (high: [[String: String]], low: [[String: String]]) {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        try await publish(client, count: highCount, prompt: "high ", maxTokens: 8, ids: "h", stream: high.stream)
        try await publish(client, count: lowCount, prompt: "low ", maxTokens: 8, ids: "l", stream: low.stream)
        var configuration = workerConfiguration(redis: redis, simulator: sim, concurrency: 4)
        configuration.queues = [high, low]
        let worker = try RunningWorker.start(configuration)
        let replies = try await waitForReplies(client, count: highCount + lowCount)
        await worker.stop()
        await sim.stop()
        // Exactly one reply each, on both queues, and nothing left.
        let ids = replies.compactMap { $0["id"] }
        #expect(Set(ids) == Set((0..<highCount).map { "h\($0)" } + (0..<lowCount).map { "l\($0)" }) && ids.count == highCount + lowCount)
        for queue in [high, low] {
            #expect(try await client.send("XLEN", queue.stream).int == 0)
            #expect(try await client.send("XPENDING", queue.stream, "llmq").array?.first?.int == 0)
        }
        return (replies.filter { $0["queue"] == high.name }, replies.filter { $0["queue"] == low.name })
    }

    /// Starts of `low` while `high` still had requests waiting (before its last start, less a
    /// millisecond: what one read took together started together).
    private func lowStartsWhileHighWaited(_ replies: (high: [[String: String]], low: [[String: String]])) -> (low: Int, all: Int) {
        let lastHigh = replies.high.map(startMilliseconds).max() ?? 0
        let low = replies.low.filter { startMilliseconds($0) < lastHigh - 1 }.count
        let high = replies.high.filter { startMilliseconds($0) < lastHigh - 1 }.count
        return (low, low + high)
    }

    @Test("Strict priority: while the priority-1 queue has work, the priority-0 queue starts nothing; both get exactly one reply each", .withRedis, .withSimulator(fourSlots))
    func strictPriority() async throws {
        let replies = try await run(
            high: .init(name: "high", stream: "llmq:requests:high", priority: 1),
            low: .init(name: "low", stream: "llmq:requests:low", priority: 0))
        let starts = lowStartsWhileHighWaited(replies)
        #expect(starts.all >= 30, "enough starts to judge: \(starts)")
        #expect(starts.low == 0, "low started \(starts.low) of \(starts.all) while high waited")
    }

    @Test("A minimum share keeps the low queue from starving: at least its share of starts while the high queue has work", .withRedis, .withSimulator(fourSlots))
    func minimumShare() async throws {
        let replies = try await run(
            high: .init(name: "high", stream: "llmq:requests:high", priority: 1),
            low: .init(name: "low", stream: "llmq:requests:low", priority: 0, minimumShare: 0.25),
            highCount: 60, lowCount: 40)
        let starts = lowStartsWhileHighWaited(replies)
        let share = Double(starts.low) / Double(max(1, starts.all))
        #expect(starts.all >= 30, "enough starts to judge: \(starts)")
        #expect(share >= 0.2 && share <= 0.4, "low's share while high waited: \(share) (\(starts))")
    }

    @Test("Weights 3:1 at the same priority give about three starts to one", .withRedis, .withSimulator(fourSlots))
    func weights() async throws {
        let replies = try await run(
            high: .init(name: "heavy", stream: "llmq:requests:heavy", priority: 0, weight: 3),
            low: .init(name: "light", stream: "llmq:requests:light", priority: 0, weight: 1),
            highCount: 60, lowCount: 60)
        let lastLight = min(replies.high.map(startMilliseconds).max() ?? 0, replies.low.map(startMilliseconds).max() ?? 0)
        let heavy = replies.high.filter { startMilliseconds($0) < lastLight - 1 }.count
        let light = replies.low.filter { startMilliseconds($0) < lastLight - 1 }.count
        let ratio = Double(heavy) / Double(max(1, light))
        #expect(ratio >= 2.4 && ratio <= 3.6, "heavy:light = \(heavy):\(light)")
    }

    @Test("The scheduler's plan: strict priority, minimum share, weights, and exhausted queues left out")
    func schedulerPlan() {
        var strict = IntakeScheduler(queues: [.init(priority: 1, weight: 1, minimumShare: 0), .init(priority: 0, weight: 1, minimumShare: 0)])
        #expect(strict.plan(free: 4, available: [0, 1]) == [0: 4])
        #expect(strict.plan(free: 4, available: [1]) == [1: 4])
        strict.recordStarts([0: 4])

        let shared = IntakeScheduler(queues: [.init(priority: 1, weight: 1, minimumShare: 0), .init(priority: 0, weight: 1, minimumShare: 0.25)])
        let low = startsOver100Plans(shared)[1] ?? 0
        #expect(low >= 95 && low <= 105, "low got \(low) of 400")

        let weighted = IntakeScheduler(queues: [.init(priority: 0, weight: 3, minimumShare: 0), .init(priority: 0, weight: 1, minimumShare: 0)])
        let heavy = startsOver100Plans(weighted)[0] ?? 0
        #expect(heavy >= 295 && heavy <= 305, "heavy got \(heavy) of 400")
    }

    /// The starts `scheduler` gives each queue over 100 plans for four free slots, both queues
    /// having work all along.
    private func startsOver100Plans(_ scheduler: IntakeScheduler) -> [Int: Int] {
        var scheduler = scheduler
        var starts: [Int: Int] = [:]
        for _ in 0..<100 {
            let plan = scheduler.plan(free: 4, available: [0, 1])
            starts.merge(plan, uniquingKeysWith: +)
            scheduler.recordStarts(plan)
        }
        return starts
    }
}

@Suite("Consumer names: two processes from one config file", .serialized, .withRedis)
struct ConsumerNameTests {
    @Test("Two workers started with the same consumer name (workerId) run under two names, the second says so; a clean stop gives the name back", .withSimulator)
    func sameNameTwice() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let environment = workerEnvironment(redis: redis, endpoint: sim.url)
        // WorkerProcess passes --consumer NAME, as a config file's workerId would.
        func started(_ worker: WorkerProcess) async throws {
            let deadline = ContinuousClock.now + .seconds(20)
            while !worker.output.contains("worker starting") {
                guard ContinuousClock.now < deadline, worker.isRunning else { throw TestFailure("\(worker.name) did not start: \(worker.output)") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        let first = try WorkerProcess.start(name: "primary-worker", environment: environment)
        try await started(first)
        let second = try WorkerProcess.start(name: "primary-worker", environment: environment)
        try await started(second)
        try await publish(client, count: 8, prompt: "job ", maxTokens: 4)
        _ = try await waitForReplies(client, count: 8, workers: [first, second])

        // Both names are leased (Redis lists a consumer only once it has received an entry).
        let leases = Set((try await client.send("KEYS", "llmq:consumer:primary-worker*").array ?? []).compactMap(\.string))
        #expect(leases.count == 2 && leases.contains("llmq:consumer:primary-worker"), "\(leases)")
        #expect(leases.contains { $0.hasPrefix("llmq:consumer:primary-worker-") })
        #expect(second.output.contains("consumer name primary-worker is in use by another live worker"), "\(second.output.prefix(800))")
        #expect(!first.output.contains("in use by another live worker"))

        first.signal(SIGTERM)
        #expect(await first.waitForExit() == 0)
        #expect(try await client.send("EXISTS", "llmq:consumer:primary-worker").int == 0, "the lease is given back")
        let third = try WorkerProcess.start(name: "primary-worker", environment: environment)
        try await started(third)
        try await publish(client, [("prompt", "after"), ("max_tokens", "4")])
        _ = try await waitForReplies(client, count: 9, workers: [second, third])
        #expect(!third.output.contains("in use by another live worker"), "\(third.output.prefix(800))")
    }
}

@Suite("Queues: guarantees per queue, and the commands that know them", .serialized, .withRedis)
struct QueueGuaranteeTests {
    @Test("An entry a crashed consumer left on the low queue is claimed and answered; one delivered too often is dead-lettered with its queue", .withSimulator)
    func claimsAndDeadLettersPerQueue() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let high = WorkerConfiguration.Queue(name: "high", stream: "llmq:requests:high", priority: 1)
        let low = WorkerConfiguration.Queue(name: "low", stream: "llmq:requests:low")
        try await publish(client, [("prompt", "left behind"), ("id", "claimed")], stream: low.stream)
        try await publish(client, [("prompt", "poison"), ("id", "dead")], stream: low.stream)
        _ = try await client.send("XGROUP", "CREATE", low.stream, "llmq", "0")
        let read = try await client.send("XREADGROUP", "GROUP", "llmq", "ghost", "COUNT", "2", "STREAMS", low.stream, ">")
        let ids = (read.array?.first?.array?.last?.array ?? []).compactMap { $0.array?.first?.string }
        #expect(ids.count == 2)
        _ = try await client.send("XCLAIM", low.stream, "llmq", "ghost", "0", ids[1], "RETRYCOUNT", "5")

        var configuration = workerConfiguration(redis: redis, simulator: sim)
        configuration.queues = [high, low]
        configuration.claimIdle(after: .milliseconds(300), every: .milliseconds(100))
        configuration.recovery.maxDeliveries = 5
        let worker = try RunningWorker.start(configuration)
        let replies = try await waitForReplies(client, count: 2)
        await worker.stop()
        let byID = Dictionary(uniqueKeysWithValues: replies.map { ($0["id"] ?? "", $0) })
        #expect(byID["claimed"]?["status"] == "ok" && byID["claimed"]?["queue"] == "low", "\(replies)")
        #expect(byID["dead"]?["error_code"] == "dead_letter" && byID["dead"]?["queue"] == "low", "\(replies)")
        let dead = try await client.send("XRANGE", "llmq:dead", "-", "+").array ?? []
        let record = Dictionary(((dead.first?.array?.last)?.pairs ?? []).map { ($0.name.string ?? "", $0.value.string ?? "") }, uniquingKeysWith: { $1 })
        #expect(record["queue"] == "low" && record["request"] == ids[1], "\(record)")
        #expect(try await client.send("XPENDING", low.stream, "llmq").array?.first?.int == 0)
    }

    @Test("llmq publish --queue writes to the queue's stream; llmq status shows every configured queue (JSON: an array)")
    func commandsKnowQueues() async throws {
        let (redis, client) = try RedisFixture.current
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("queues-\(UUID().uuidString).json")
        try Data(#"{"queues": {"urgent": {"priority": 2}, "bulk": {"stream": "jobs:bulk", "weight": 3}}}"#.utf8).write(to: config)
        defer { try? FileManager.default.removeItem(at: config) }
        let llmq = try llmqExecutable().path
        let common = ["--config", config.path, "--redis-url", redis.url]
        #expect(try await runProgram(llmq, ["publish"] + common + ["--queue", "urgent", "--prompt", "now"]).status == 0)
        #expect(try await runProgram(llmq, ["publish"] + common + ["--queue", "bulk", "--prompt", "later"]).status == 0)
        #expect(try await runProgram(llmq, ["publish", "--redis-url", redis.url, "--queue", "adhoc", "--prompt", "x"]).status == 0)
        #expect(try await client.send("XLEN", "llmq:requests:urgent").int == 1)
        #expect(try await client.send("XLEN", "jobs:bulk").int == 1)
        #expect(try await client.send("XLEN", "llmq:requests:adhoc").int == 1, "the naming rule without configuration")

        let status = try await runProgram(llmq, ["status", "--json"] + common)
        let array = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [[String: Any]], "\(status.output)")
        #expect(array.map { $0["stream"] as? String } == ["llmq:requests:urgent", "jobs:bulk"], "priority order")
        #expect(array.map { $0["length"] as? Int } == [1, 1])
        let text = try await runProgram(llmq, ["status"] + common)
        #expect(text.output.contains("queue urgent (priority 2") && text.output.contains("queue bulk (priority 0, weight 3"), "\(text.output)")
        let watch = try await runProgram(llmq, ["status", "--watch", "--count", "1"] + common)
        #expect(watch.status == 2 && watch.error.contains("--queue"), "\(watch.error)")
        let one = try await runProgram(llmq, ["status", "--watch", "--count", "1", "--queue", "bulk"] + common)
        #expect(one.status == 0 && one.output.contains("jobs:bulk"), "\(one.output)")
    }
}
