import Foundation
import LLMQBackends
@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
@testable import LLMQRedis
import LLMQSimulator
import LLMQTestSupport
@testable import LLMQWorker
import Synchronization
import Testing

/// A pool of in-process workers serving two queues whose streams live on different masters of
/// a real Redis Cluster, and what a producer sees of it.
private struct ClusterPool {
    let cluster: RedisCluster
    let client: RedisClient
    let queues: [WorkerConfiguration.Queue]
    let streams: WorkerConfiguration.Streams

    /// Two queues, `a` and `b`, on the masters of `tags` (one tag each);
    /// the producer's client is shut down with the test's fixtures.
    init(cluster: RedisCluster, tags: [String]) {
        self.cluster = cluster
        let client = RedisClient(configuration: cluster.configuration, name: "test-producer")
        FixtureScope.atEnd { client.shutdown() }
        self.client = client
        self.queues = [
            WorkerConfiguration.Queue(name: "a", stream: "{\(tags[0])}:requests"),
            WorkerConfiguration.Queue(name: "b", stream: "{\(tags[1])}:requests"),
        ]
        self.streams = .clusterDefaults
    }

    /// Two queues on two masters of the test's cluster (`.withRedisCluster`).
    static func onTwoMasters() async throws -> ClusterPool {
        let cluster = try RedisClusterFixture.current.cluster
        return ClusterPool(cluster: cluster, tags: try await cluster.tagsOnDifferentMasters(2))
    }

    func replyStream(of queue: WorkerConfiguration.Queue) -> String { streams.serving(queue.stream).replies }

    func configuration(simulator: RunningSimulator, waitReplicas: Int = 0) -> WorkerConfiguration {
        var configuration = WorkerConfiguration(
            consumer: "cluster-\(UUID().uuidString.prefix(6))", backend: BackendConfiguration(kind: .llamaCpp, endpoint: simulator.url))
        configuration.redis = cluster.configuration
        configuration.redis.waitReplicas = waitReplicas
        configuration.streams = streams
        configuration.queues = queues
        configuration.concurrency = 8
        configuration.readBlock = .milliseconds(500)
        configuration.shutdownGrace = .seconds(10)
        configuration.retry.initialBackoff = .milliseconds(20)
        configuration.retry.maxBackoff = .milliseconds(200)
        // Entries whose delivery or acknowledgement a failover lost are taken over soon.
        configuration.claimIdle(after: .seconds(2), every: .milliseconds(500))
        return configuration
    }

    /// Publishes `count` requests to `queue` with ids `<prefix><n>`, then waits until a replica of
    /// its master has them (as a producer that must not lose a request to a failover does).
    func publish(_ count: Int, to queue: WorkerConfiguration.Queue, prefix: String) async throws {
        // After a failover the client learns the new master from its first failed command: a
        // read, which may fail harmlessly, goes first (a failed XADD might have been written).
        let deadline = ContinuousClock.now + .seconds(30)
        while (try? await client.send("XLEN", queue.stream)) == nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        for start in stride(from: 0, to: count, by: 100) {
            let commands = (start..<min(count, start + 100)).map { index in
                RedisCommand("XADD", queue.stream, "*", "prompt", "request \(index)", "max_tokens", "4", "id", "\(prefix)\(index)")
            }
            let replies = try await client.pipeline(commands)
            #expect(replies.allSatisfy { $0.string != nil }, "\(replies.first { $0.string == nil } ?? .null)")
        }
        _ = try await client.send(RedisCommand("WAIT", "1", "2000"), onNodeOf: queue.stream)
    }

    /// Publishes `count` requests to each queue: ids `a0`, `a1`, ... on `a`, `b0`, ... on `b`.
    func publishToBoth(_ count: Int) async throws {
        try await publish(count, to: queues[0], prefix: "a")
        try await publish(count, to: queues[1], prefix: "b")
    }

    /// After `publishToBoth(count)` and a fault: publishes 20 more to each queue (`late-a0`, ...)
    /// and waits until every request of the run has a reply; returns their ids and the replies.
    func publishLateAndWait(after count: Int) async throws -> (ids: Set<String>, replies: [String: [String]]) {
        try await publish(20, to: queues[0], prefix: "late-a")
        try await publish(20, to: queues[1], prefix: "late-b")
        let ids = Set((0..<count).map { "a\($0)" } + (0..<count).map { "b\($0)" } + (0..<20).map { "late-a\($0)" } + (0..<20).map { "late-b\($0)" })
        return (ids, try await waitForReplies(to: ids, timeout: .seconds(120)))
    }

    /// Every reply now in the queues' reply streams: request id → reply entry IDs.
    func replies() async throws -> [String: [String]] {
        var result: [String: [String]] = [:]
        for queue in queues {
            for (entryID, fields) in try await entries(of: replyStream(of: queue)) {
                result[fields["id"] ?? "?", default: []].append(entryID)
            }
        }
        return result
    }

    func entries(of stream: String, after cursor: String = "-") async throws -> [(String, [String: String])] {
        let reply = try await client.send("XRANGE", stream, cursor == "-" ? "-" : "(" + cursor, "+")
        return (reply.array ?? []).compactMap { item in
            guard let id = item.array?.first?.string else { return nil }
            var fields: [String: String] = [:]
            for (name, value) in item.array?[1].pairs ?? [] { fields[name.string ?? ""] = value.string ?? "" }
            return (id, fields)
        }
    }

    /// Waits until every id in `ids` has a reply (fails after `timeout`).
    func waitForReplies(to ids: Set<String>, timeout: Duration) async throws -> [String: [String]] {
        let deadline = ContinuousClock.now + timeout
        var last: [String: [String]] = [:]
        while ContinuousClock.now < deadline {
            if let replies = try? await replies() {
                last = replies
                if ids.isSubset(of: Set(replies.keys)) { return replies }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("\(ids.subtracting(last.keys).count) of \(ids.count) requests without a reply after \(timeout)")
    }
}

/// Reads the reply streams as they grow, as a producer waiting for replies would, and keeps
/// every reply it saw, even those that a failover later loses.
private final class ReplyWatcher: Sendable {
    private final class Seen: Sendable {
        let replies = Mutex<[String: Set<String>]>([:])
    }

    private let seen = Seen()
    private let task: Task<Void, Never>

    init(pool: ClusterPool) {
        let seen = self.seen
        task = Task {
            var cursors = Dictionary(uniqueKeysWithValues: pool.queues.map { (pool.replyStream(of: $0), "-") })
            while !Task.isCancelled {
                for (stream, cursor) in cursors {
                    guard let entries = try? await pool.entries(of: stream, after: cursor) else { continue }
                    if let last = entries.last { cursors[stream] = last.0 }
                    seen.replies.withLock { seen in
                        for (entryID, fields) in entries { seen[fields["id"] ?? "?", default: []].insert(entryID) }
                    }
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    func stop() async -> [String: Set<String>] {
        task.cancel()
        await task.value
        return seen.replies.withLock { $0 }
    }
}

@Suite("Workers against a real Redis Cluster", .serialized, .timeLimit(.minutes(5)), .withRedisCluster)
struct ClusterWorkerTests {
    @Test(
        "Streamed answers on two queues on two masters: chunks in each queue's slot, the last one with the reply; stream_to and reply_to in another slot get invalid_request",
        .withSimulator(.init(slots: 8, tokenMilliseconds: 5)))
    func streaming() async throws {
        let pool = try await ClusterPool.onTwoMasters()
        let cluster = pool.cluster
        let simulator = try SimulatorFixture.current
        try RunningWorker.start(pool.configuration(simulator: simulator))
        var keys: [String: String] = [:]
        for queue in pool.queues {
            for index in 0..<5 {
                let id = "\(queue.name)-s\(index)"
                let entry = try #require(try await pool.client.send(
                    "XADD", queue.stream, "*", "prompt", "stream \(index)", "max_tokens", "12", "stream", "1", "id", id).string)
                keys[id] = "\(pool.streams.serving(queue.stream).replyToPrefix)stream:\(queue.name):\(entry)"
            }
        }
        let a = pool.queues[0]
        let otherTag = pool.streams.serving(pool.queues[1].stream).replyToPrefix
        _ = try await pool.client.send("XADD", a.stream, "*", "prompt", "x", "stream_to", "\(pool.streams.serving(a.stream).replyToPrefix)elsewhere", "id", "same-slot")
        _ = try await pool.client.send("XADD", a.stream, "*", "prompt", "x", "stream_to", "\(otherTag)elsewhere", "id", "cross-stream")
        _ = try await pool.client.send("XADD", a.stream, "*", "prompt", "x", "reply_to", "\(otherTag)mine", "id", "cross-reply")
        let replies = try await pool.waitForReplies(to: Set(keys.keys).union(["same-slot", "cross-stream", "cross-reply"]), timeout: .seconds(60))
        #expect(replies.values.allSatisfy { $0.count == 1 })
        var byID: [String: [String: String]] = [:]
        for queue in pool.queues {
            for (_, fields) in try await pool.entries(of: pool.replyStream(of: queue)) { byID[fields["id"] ?? ""] = fields }
        }
        for (id, key) in keys {
            let reply = try #require(byID[id])
            #expect(reply["status"] == "ok" && reply["stream"] == key, "\(reply)")
            let chunks = try await pool.entries(of: key).map(\.1)
            var text = ""
            for chunk in chunks { text += chunk["delta"] ?? "" }
            #expect(text == reply["content"] && chunks.last?["done"] == "1", "\(id): \(chunks.count) chunks")
            #expect(try await cluster.masterPort(for: key) == cluster.masterPort(for: key.hasPrefix(pool.streams.serving(a.stream).replyToPrefix) ? a.stream : pool.queues[1].stream))
        }
        #expect(byID["same-slot"]?["status"] == "ok")
        for id in ["cross-stream", "cross-reply"] {
            #expect(byID[id]?["error_code"] == "invalid_request", "\(byID[id] ?? [:])")
            // The queue's own prefix ({tag}:) catches it first; the slot check stands behind it.
            #expect(byID[id]?["error"]?.contains(otherTag) == true, "\(byID[id]?["error"] ?? "")")
        }
    }

    @Test("A pool of two workers serves 1,000 requests over two queues on different masters: one reply each, nothing left", .withSimulator(.init(slots: 16, tokenMilliseconds: 1)))
    func twoQueuesOnTwoMasters() async throws {
        let pool = try await ClusterPool.onTwoMasters()
        let cluster = pool.cluster
        #expect(try await cluster.masterPort(for: pool.queues[0].stream) != cluster.masterPort(for: pool.queues[1].stream))
        let simulator = try SimulatorFixture.current
        try await pool.publishToBoth(500)
        let workers = try (0..<2).map { _ in try RunningWorker.start(pool.configuration(simulator: simulator)) }
        let ids = Set((0..<500).map { "a\($0)" } + (0..<500).map { "b\($0)" })
        let replies = try await pool.waitForReplies(to: ids, timeout: .seconds(120))
        for worker in workers { await worker.stop() }
        await simulator.stop()

        #expect(replies.count == 1000 && replies.values.allSatisfy { $0.count == 1 }, "exactly one reply per request")
        for queue in pool.queues {
            let keys = pool.streams.serving(queue.stream)
            #expect(try await pool.client.send("XLEN", queue.stream).int == 0, "answered requests are deleted")
            #expect(try await pool.client.send("XPENDING", queue.stream, "llmq").array?.first?.int == 0)
            let statuses = try await pool.entries(of: keys.replies).map { $0.1["status"] ?? "" }
            #expect(statuses == Array(repeating: "ok", count: 500), "\(queue.name): \(Set(statuses))")
            #expect(try await pool.client.send("HGET", keys.stats, "replies:ok").int == 500, "counted in \(keys.stats)")
        }
    }

    @Test(
        "kill -9 of the master of a queue's slot mid-run: every request gets a reply, the workers serve on after the promotion",
        .serialized, .withRedisCluster(nodeTimeout: 1000), .withSimulator(.init(slots: 16, tokenMilliseconds: 5)),
        arguments: [0, 1])
    func failover(waitReplicas: Int) async throws {
        let pool = try await ClusterPool.onTwoMasters()
        let cluster = pool.cluster
        let simulator = try SimulatorFixture.current
        let count = 300
        try await pool.publishToBoth(count)
        let watcher = ReplyWatcher(pool: pool)
        let workers = try (0..<2).map { _ in try RunningWorker.start(pool.configuration(simulator: simulator, waitReplicas: waitReplicas)) }

        // Mid-run: kill the master of queue a once about a quarter of the requests are answered.
        let deadline = ContinuousClock.now + .seconds(60)
        var answeredBefore = 0
        while answeredBefore < count / 2, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            answeredBefore = (try? await pool.replies().count) ?? answeredBefore
        }
        let master = try await cluster.masterPort(for: pool.queues[0].stream)
        let replica = try await cluster.replicaPorts(of: master).first
        let killedAt = Int64(Date().timeIntervalSince1970 * 1000)
        await cluster.kill(port: master)

        // After the promotion, more requests on both queues: the same workers serve them.
        try await cluster.waitUntilHealthy(timeout: .seconds(60))
        #expect(try await cluster.masterPort(for: pool.queues[0].stream) == replica, "the replica took over")
        let (ids, replies) = try await pool.publishLateAndWait(after: count)
        for worker in workers { await worker.stop() }
        let seen = await watcher.stop()
        let backendCalls = try await simulator.stats().requests
        await simulator.stop()

        let firstAfter = try await pool.entries(of: pool.replyStream(of: pool.queues[0]))
            .compactMap { Int64($0.0.split(separator: "-")[0]) }.filter { $0 > killedAt }.min()
        let duplicatedInStream = replies.values.filter { $0.count > 1 }.count
        for (id, entryIDs) in replies where entryIDs.count > 1 {
            for queue in pool.queues {
                for (entryID, fields) in try await pool.entries(of: pool.replyStream(of: queue)) where entryIDs.contains(entryID) {
                    print("duplicate reply to \(id): \(entryID) \(fields.filter { ["request", "consumer", "status", "error_code"].contains($0.key) })")
                }
            }
        }
        let seenTwice = seen.values.filter { $0.count > 1 }.count
        let lostAfterSeen = seen.filter { id, entryIDs in !entryIDs.isSubset(of: Set(replies[id] ?? [])) }.count
        print("""
            cluster failover, waitReplicas \(waitReplicas): \(answeredBefore) of \(ids.count) answered at the kill; \
            served twice \(backendCalls - ids.count), replies duplicated in the streams \(duplicatedInStream), \
            requests whose reply a producer saw twice \(seenTwice), replies seen and then lost \(lostAfterSeen); \
            first reply from the new master \(firstAfter.map { "\($0 - killedAt) ms" } ?? "none") after kill -9
            """)
        #expect(replies.count == ids.count, "every request has a reply")
        #expect(duplicatedInStream == 0, "the reply script writes a reply and acknowledges in one replicated step")
        #expect(backendCalls >= ids.count)
        #expect(firstAfter != nil)
    }

    @Test("Slot migrations mid-run (a paused one, key by key, and redis-cli --cluster reshard): ASK and MOVED followed, nothing lost", .withSimulator(.init(slots: 16, tokenMilliseconds: 5)))
    func slotMigration() async throws {
        let cluster = try RedisClusterFixture.current.cluster
        // Queue a's slot is the first of its master's, so that `reshard --cluster-slots 1` moves it.
        let masters = try await cluster.masters()
        let firstSlots = Set(masters.values.compactMap { $0.map(\.lowerBound).min() })
        let tagA = (0..<1_000_000).lazy.map { "r\($0)" }.first { firstSlots.contains(HashSlot.of($0)) }!
        let masterA = try await cluster.masterPort(for: "{\(tagA)}")
        var tagB = ""
        for tag in try await cluster.tagsOnDifferentMasters(3) where try await cluster.masterPort(for: "{\(tag)}") != masterA {
            tagB = tag
            break
        }
        let pool = ClusterPool(cluster: cluster, tags: [tagA, tagB])
        let simulator = try SimulatorFixture.current
        let count = 300
        try await pool.publishToBoth(count)
        let workers = try (0..<2).map { _ in try RunningWorker.start(pool.configuration(simulator: simulator)) }
        while (try? await pool.replies().count) ?? 0 < count / 3 { try await Task.sleep(for: .milliseconds(10)) }

        // Queue b: the steps of a migration by hand, a pause after each key, so the workers
        // meet the slot half moved (ASK for moved keys, TRYAGAIN for scripts over both).
        let slotB = HashSlot.of(tagB)
        let sourceB = try await cluster.masterPort(for: pool.queues[1].stream)
        let targetB = masters.keys.first { $0 != sourceB }!
        func id(_ port: Int) async throws -> String {
            try await cluster.cli(port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        _ = try await cluster.cli(targetB, ["CLUSTER", "SETSLOT", String(slotB), "IMPORTING", try await id(sourceB)])
        _ = try await cluster.cli(sourceB, ["CLUSTER", "SETSLOT", String(slotB), "MIGRATING", try await id(targetB)])
        let keys = try await cluster.cli(sourceB, ["CLUSTER", "GETKEYSINSLOT", String(slotB), "1000"])
            .split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
        #expect(keys.contains(pool.queues[1].stream))
        for key in keys {
            _ = try await cluster.cli(sourceB, ["MIGRATE", "127.0.0.1", String(targetB), "", "0", "5000", "KEYS", key])
            try await Task.sleep(for: .milliseconds(300))
        }
        let targetID = try await id(targetB)
        for port in cluster.ports { _ = try await cluster.cli(port, ["CLUSTER", "SETSLOT", String(slotB), "NODE", targetID]) }
        #expect(try await cluster.masterPort(for: pool.queues[1].stream) == targetB)

        // Queue a: redis-cli moves its slot (the first of its master's) to another master.
        let sourceA = try await cluster.masterPort(for: pool.queues[0].stream)
        let targetA = masters.keys.first { $0 != sourceA }!
        let reshard = try await runProgram("redis-cli", [
            "--cluster", "reshard", "127.0.0.1:\(sourceA)", "--cluster-from", try await id(sourceA),
            "--cluster-to", try await id(targetA), "--cluster-slots", "1", "--cluster-yes",
        ])
        #expect(reshard.status == 0, "\(reshard.output.suffix(300)) \(reshard.error)")
        #expect(try await cluster.masterPort(for: pool.queues[0].stream) == targetA, "queue a's slot moved")

        let (ids, replies) = try await pool.publishLateAndWait(after: count)
        for worker in workers { await worker.stop() }
        let backendCalls = try await simulator.stats().requests
        await simulator.stop()
        #expect(replies.count == ids.count && replies.values.allSatisfy { $0.count == 1 }, "one reply each")
        #expect(backendCalls == ids.count, "no request served twice: a migration loses nothing")
        for queue in pool.queues {
            #expect(try await pool.client.send("XLEN", queue.stream).int == 0)
            #expect(try await pool.client.send("XPENDING", queue.stream, "llmq").array?.first?.int == 0)
        }
    }
}
