import Foundation
import Glibc
import LLMQBackends
@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
import LLMQRedis
import LLMQSimulator
@testable import LLMQWorker
import Testing

/// The promises at the edges between features (issue 18's cases), each as a user would see it:
/// the replies, the chunks, the time a request waited, what a backend saw.
@Suite("Ownership at the edges: exactly one reply and one done under combined faults", .serialized, .timeLimit(.minutes(3)), .withRedis)
struct OwnershipTests {
    // Case 1: an entry deleted while running, then the reply's answer lost with the connection.
    @Test(
        "Deleted while running, taken out of the group by the worker's own claim, and the reply's connection dropped right after the write: exactly one reply",
        .withFaultProxy, .withSimulator(.init(slots: 4, tokenMilliseconds: 40)))
    func deletedAndDroppedAfterReply() async throws {
        let (redis, client) = try RedisFixture.current
        let proxy = try FaultProxyFixture.current
        let sim = try SimulatorFixture.current
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        let entry = try await publish(client, [("prompt", "long"), ("max_tokens", "50"), ("id", "deleted")])
        // The first reply script for this entry runs, and its answer never comes back.
        let rule = proxy.add(FaultProxy.Rule(
            name: "reply", matches: { arguments in
                ["EVALSHA", "EVAL"].contains(arguments.first?.uppercased() ?? "") && arguments.count > 2 && (Int(arguments[2]) ?? 0) >= 6
                    && arguments.contains(entry)
            }, nth: 1, times: 1, action: .dropAfter))
        var configuration = workerConfiguration(redis: redis, simulator: sim)
        configuration.redis = proxy.configuration
        configuration.readBlock = .milliseconds(100)
        configuration.claimIdle(after: .milliseconds(900), every: .milliseconds(100))
        let worker = try RunningWorker.start(configuration)
        try await Task.sleep(for: .milliseconds(300))
        _ = try await client.send("XDEL", "llmq:requests", entry)
        let replies: [[String: String]]
        do {
            replies = try await waitForReplies(client, count: 1, timeout: .seconds(15))
        } catch {
            await worker.stop()
            Issue.record("no reply at all: \(error)")
            return
        }
        try await Task.sleep(for: .milliseconds(500))
        await worker.stop()
        await sim.stop()
        #expect(proxy.fired(rule) == 1, "the fault hit the reply")
        #expect(try await readReplies(client).count == 1, "exactly one reply")
        #expect(replies[0]["id"] == "deleted" && replies[0]["status"] == "ok", "\(replies[0])")
    }

    // Case 6: what a claim round took is started even when a later command of the round fails.
    @Test(
        "Two queues with abandoned entries; the claim on the second fails: the first queue's entry is answered at once, not after another claimMinIdle",
        .withFaultProxy, .withSimulator(.init(slots: 4, tokenMilliseconds: 1)))
    func claimedEntriesSurviveALaterFailure() async throws {
        let (redis, client) = try RedisFixture.current
        let proxy = try FaultProxyFixture.current
        let sim = try SimulatorFixture.current
        let first = WorkerConfiguration.Queue(name: "one", stream: "llmq:requests:one", priority: 1)
        let second = WorkerConfiguration.Queue(name: "two", stream: "llmq:requests:two")
        for queue in [first, second] {
            _ = try await client.send("XGROUP", "CREATE", queue.stream, "llmq", "0", "MKSTREAM")
            let id = try await publish(client, [("prompt", "left behind"), ("id", queue.name)], stream: queue.stream)
            _ = try await client.send("XREADGROUP", "GROUP", "llmq", "ghost", "COUNT", "1", "STREAMS", queue.stream, ">")
            _ = try await client.send("XCLAIM", queue.stream, "llmq", "ghost", "0", id, "IDLE", "100000", "JUSTID")
        }
        // The claim on the second queue (XAUTOCLAIM, or the script that runs it) fails once.
        let rule = proxy.add(FaultProxy.Rule(
            name: "claim two", matches: { arguments in
                let name = arguments.first?.uppercased() ?? ""
                if name == "XAUTOCLAIM" { return arguments.count > 1 && arguments[1] == second.stream }
                // The claim script: one key, then group, consumer, minimum idle (4000), cursor, count.
                return ["EVALSHA", "EVAL"].contains(name) && arguments.count >= 9 && arguments[2] == "1" && arguments[3] == second.stream
                    && arguments[6] == "4000"
            }, nth: 1, times: 1, action: .error("LOADING Redis is loading the dataset in memory")))
        var configuration = workerConfiguration(redis: redis, simulator: sim)
        configuration.redis = proxy.configuration
        configuration.queues = [first, second]
        configuration.claimIdle(after: .seconds(4), every: .milliseconds(100))
        let started = ContinuousClock.now
        let worker = try RunningWorker.start(configuration)
        let replies = try await waitForReplies(client, count: 2, timeout: .seconds(15))
        let elapsed = ContinuousClock.now - started
        await worker.stop()
        await sim.stop()
        #expect(proxy.fired(rule) == 1, "the claim on the second queue failed once")
        #expect(Set(replies.map { $0["id"] ?? "" }) == ["one", "two"])
        #expect(elapsed < .seconds(2), "answered in \(elapsed): the first queue's entry waited for another claim")
    }

    @Test("A request's control, task and chunk stream are freed when it is answered (no cycle keeps them), streamed or not", .withSimulator(.init(slots: 8, tokenMilliseconds: 1)))
    func nothingOutlivesItsRequest() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let before = EntryControl.live.withLockedValue { $0 }
        let worker = try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))
        for index in 0..<40 {
            var fields = [("prompt", "p \(index)"), ("max_tokens", "6")]
            if index % 2 == 0 { fields.append(("stream", "1")) }
            try await publish(client, fields)
        }
        _ = try await waitForReplies(client, count: 40)
        await worker.stop()
        await sim.stop()
        #expect(EntryControl.live.withLockedValue { $0 } == before, "controls still alive after every request was answered")
    }

    // Case 2a: a reply_to that is not a stream costs the reply_to only.
    @Test("A streamed request whose reply_to holds a string: the reply goes to the default stream, the done chunk is still written", .withSimulator(.init(slots: 4, tokenMilliseconds: 2)))
    func wrongTypeReplyToKeepsTheDoneChunk() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        _ = try await client.send("SET", "llmq:mine", "x")
        let worker = try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))
        let entry = try await publish(client, [("prompt", "hi"), ("stream", "1"), ("reply_to", "llmq:mine"), ("max_tokens", "8")])
        let replies = try await waitForReplies(client, count: 1)
        await worker.stop()
        await sim.stop()
        let reply = try #require(replies.first)
        #expect(reply["status"] == "ok", "\(reply)")
        #expect(reply["reply_error"]?.contains("llmq:mine") == true, "\(reply)")
        #expect(reply["stream_error"] == nil, "the chunk stream was fine: \(reply)")
        let chunks = try await ReadChunks.read(client, "llmq:stream:\(entry)")
        #expect(chunks.problems.isEmpty, "\(chunks.problems)")
        #expect(chunks.done?["status"] == "ok" && chunks.text == reply["content"])
        #expect(try await client.send("GET", "llmq:mine").string == "x", "the producer's key is left alone")
    }

    // Case 2b: out of memory for a while delays replies and chunks; it reroutes nothing.
    @Test("Redis out of memory for 4 s mid-generation: reply_to still gets its reply, the streamed answer its text and done chunk", .withSimulator(.init(slots: 4, tokenMilliseconds: 50)))
    func outOfMemoryDelaysRoutesNothing() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let worker = try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))
        try await publish(client, [("prompt", "routed"), ("reply_to", "llmq:mine2"), ("max_tokens", "30"), ("id", "routed")])
        let streamed = try await publish(client, [("prompt", "streamed"), ("stream", "1"), ("max_tokens", "30"), ("id", "streamed")])
        // Into the generation (30 tokens x 50 ms), the server refuses every write for 4 s.
        try await Task.sleep(for: .milliseconds(500))
        _ = try await client.send("CONFIG", "SET", "maxmemory", "1")
        try await Task.sleep(for: .seconds(4))
        _ = try await client.send("CONFIG", "SET", "maxmemory", "0")
        let routed = try await waitForReplies(client, count: 1, stream: "llmq:mine2", timeout: .seconds(20))
        let replies = try await waitForReplies(client, count: 1, timeout: .seconds(20))
        try await Task.sleep(for: .milliseconds(300))
        await worker.stop()
        await sim.stop()
        #expect(routed.count == 1 && routed[0]["id"] == "routed" && routed[0]["status"] == "ok", "\(routed)")
        #expect(routed[0]["reply_error"] == nil, "\(routed)")
        #expect(replies.count == 1 && replies[0]["id"] == "streamed" && replies[0]["status"] == "ok", "\(replies)")
        #expect(replies[0]["stream_error"] == nil, "\(replies)")
        let chunks = try await ReadChunks.read(client, "llmq:stream:\(streamed)")
        #expect(chunks.problems.isEmpty, "\(chunks.problems)")
        #expect(chunks.text == replies[0]["content"], "the rebuilt text equals the reply")
    }

    // Case 3: a stalled worker's late chunks never land after its heir's reset.
    @Test("SIGSTOP a worker mid-stream, let another take over, SIGCONT: nothing of the first lands after the heir's reset")
    func stalledWriterIsFenced() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try await SimProcess(["--slots", "8", "--token-ms", "50"])
        let environment = workerEnvironment(redis: redis, endpoint: sim.url, quickTakeover, ["LLMQ_CONCURRENCY": "2", "LLMQ_LOG_LEVEL": "notice"])
        let first = try WorkerProcess.start(name: "stalled", environment: environment)
        let entry = try await publish(client, [("prompt", "long"), ("max_tokens", "80"), ("stream", "1"), ("id", "s")])
        let key = "llmq:stream:\(entry)"
        let deadline = ContinuousClock.now + .seconds(20)
        while try await ReadChunks.read(client, key).textChunks < 5, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        first.signal(SIGSTOP)
        let heir = try WorkerProcess.start(name: "heir", environment: environment)
        // The heir claims it (1.5 s idle) and streams for a while.
        while ContinuousClock.now < deadline {
            let chunks = try await ReadChunks.read(client, key)
            if let reset = chunks.chunks.firstIndex(where: { $0["reset"] == "1" }), chunks.chunks.count - reset > 5 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        first.signal(SIGCONT)
        let replies = try await waitForReplies(client, count: 1, timeout: .seconds(30))
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await readReplies(client).count == 1, "exactly one reply")
        let chunks = try await ReadChunks.read(client, key)
        let reset = try #require(chunks.chunks.firstIndex { $0["reset"] == "1" }, "the heir starts with a reset")
        #expect(chunks.chunks[reset]["delivery"] == "2")
        let late = chunks.chunks[(reset + 1)...].filter { $0["delivery"] != "2" }
        #expect(late.isEmpty, "chunks of the stalled worker after the heir's reset: \(late.map { $0["seq"] ?? "?" })")
        #expect(chunks.problems.isEmpty, "\(chunks.problems)")
        #expect(chunks.text == replies[0]["content"], "the rebuilt text equals the reply")
        for worker in [first, heir] { worker.signal(SIGTERM) }
        for worker in [first, heir] { _ = await worker.waitForExit() }
    }

    // Case 4: an idle worker watches every queue it serves.
    @Test("Concurrency 1, queues hi and lo, only lo traffic, readBlockMs 2000: each lo request starts within 50 ms", .withSimulator(.init(slots: 4, tokenMilliseconds: 0)))
    func idleWorkerWatchesEveryQueue() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, simulator: sim, concurrency: 1)
        configuration.queues = [
            WorkerConfiguration.Queue(name: "hi", stream: "llmq:requests:hi", priority: 1),
            WorkerConfiguration.Queue(name: "lo", stream: "llmq:requests:lo", minimumShare: 0.5),
        ]
        configuration.readBlock = .milliseconds(2000)
        let worker = try RunningWorker.start(configuration)
        try await Task.sleep(for: .milliseconds(300))
        for index in 0..<10 {
            try await publish(client, [("prompt", "lo \(index)"), ("max_tokens", "2")], stream: "llmq:requests:lo")
            _ = try await waitForReplies(client, count: index + 1)
            try await Task.sleep(for: .milliseconds(150))
        }
        await worker.stop()
        await sim.stop()
        let waits = try await readReplies(client).compactMap { $0["queue_ms"].flatMap(Double.init) }.sorted()
        #expect(waits.count == 10)
        #expect((waits.last ?? .infinity) < 50, "queue_ms of idle lo requests: \(waits)")
    }

    // Case 5: a backend never gets more than its slots.
    @Test(
        "Two backends with slots 2 each, concurrency 8, three bursts of 300: neither ever has more than 2 requests",
        .withSimulators(.init(slots: 16, tokenMilliseconds: 1), .init(slots: 16, tokenMilliseconds: 1)))
    func slotsAreNeverExceeded() async throws {
        let (redis, client) = try RedisFixture.current
        // The simulators have more slots than llmq is told, so over-admission shows in their count.
        let (a, b) = try SimulatorFixture.pair
        let configuration = workerConfiguration(redis: redis, pool: [.named("a", a.url, slots: 2), .named("b", b.url, slots: 2)], concurrency: 8)
        let worker = try RunningWorker.start(configuration)
        for burst in 0..<3 {
            for index in 0..<300 { try await publish(client, [("prompt", "burst \(burst) \(index)"), ("max_tokens", String(1 + index % 3))]) }
            _ = try await waitForReplies(client, count: (burst + 1) * 300, timeout: .seconds(60))
        }
        await worker.stop()
        let (statsA, statsB) = (try await a.stats(), try await b.stats())
        await a.stop()
        await b.stop()
        #expect(statsA.maxInFlight <= 2 && statsB.maxInFlight <= 2, "max in flight: a \(statsA.maxInFlight), b \(statsB.maxInFlight)")
        #expect(statsA.completed + statsB.completed == 900)
    }

    // Case 7: a request waiting for its model's only backend keeps its deadline.
    @Test(
        "A request for a model whose only backend is full waits for a slot until its deadline, then gets backend_busy",
        .withSimulators(.init(slots: 4, tokenMilliseconds: 100), .init(slots: 4, tokenMilliseconds: 0)))
    func fullBackendWaitKeepsTheDeadline() async throws {
        let (redis, client) = try RedisFixture.current
        let (sim, other) = try SimulatorFixture.pair
        let configuration = workerConfiguration(redis: redis, pool: [.named("only", sim.url, slots: 1, models: ["m"]), .named("rest", other.url, slots: 4, models: ["n"])], concurrency: 4)
        let worker = try RunningWorker.start(configuration)
        try await publish(client, [("prompt", "long"), ("model", "m"), ("max_tokens", "30"), ("id", "long")])
        try await Task.sleep(for: .milliseconds(300))
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try await publish(client, [("prompt", "short"), ("model", "m"), ("max_tokens", "1"), ("id", "late"), ("deadline_ms", String(now + 700))])
        let replies = try await waitForReplies(client, count: 1, timeout: .seconds(10))
        let finishedAt = Int64(Date().timeIntervalSince1970 * 1000)
        _ = try await waitForReplies(client, count: 2, timeout: .seconds(10))
        await worker.stop()
        await sim.stop()
        await other.stop()
        #expect(replies[0]["id"] == "late" && replies[0]["error_code"] == "backend_busy", "\(replies[0])")
        #expect(finishedAt - now < 1500, "answered at its deadline, not when the slot freed")
    }
}
