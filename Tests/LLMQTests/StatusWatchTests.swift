import Foundation
import Glibc
@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
import LLMQRedis
@testable import LLMQWorker
import Testing

/// A reading as `QueueStatus.read` would return it, with the numbers a test cares about.
private func snapshot(
    length: Int, lag: Int? = nil, pending: Int = 0, groupExists: Bool = true, consumers: [QueueStatus.Consumer] = [],
    oldest: QueueStatus.OldestPending? = nil, repliesLength: Int = 0, deadLength: Int = 0,
    counts: QueueStatus.ReplyCounts = .zero
) -> QueueStatus {
    QueueStatus(
        stream: "llmq:requests", group: "llmq", length: length, lag: lag, pending: pending, groupExists: groupExists,
        consumers: consumers, oldestPending: oldest, replies: "llmq:replies", repliesLength: repliesLength,
        dead: "llmq:dead", deadLength: deadLength, stats: "llmq:stats", replyCounts: counts)
}

private func lines(_ frame: String) -> [String] {
    frame.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
}

@Suite("status --watch frames")
struct StatusWatchFrameTests {
    @Test("the second frame shows trends, rates by status and by error code, and the dead letters since the start")
    func trendsAndRates() {
        var watch = StatusWatch()
        let before = snapshot(
            length: 10, lag: 4, pending: 8, repliesLength: 100, deadLength: 2,
            counts: .init(ok: 100, error: 10, errorsByCode: ["timeout": 6, "backend_error": 4]))
        let first = watch.frame(for: before, elapsed: .zero)
        #expect(lines(first)[1] == "length 10  lag 4  pending 8")
        #expect(lines(first)[2] == "replies/s  measuring (rates from the next frame)  totals ok 100  error 10")
        #expect(lines(first)[3] == "dead letters since start 0")

        let after = snapshot(
            length: 13, lag: 6, pending: 8,
            consumers: [.init(name: "worker-b", pending: 3, idleMilliseconds: 1500), .init(name: "worker-a", pending: 5, idleMilliseconds: 250)],
            oldest: .init(id: "1700000000000-0", consumer: "worker-a", ageMilliseconds: 12_345, idleMilliseconds: 4_500, deliveries: 2),
            repliesLength: 130, deadLength: 3,
            counts: .init(ok: 120, error: 16, errorsByCode: ["timeout": 10, "backend_error": 5, "dead_letter": 1]))
        let second = watch.frame(for: after, elapsed: .seconds(2))
        #expect(second == """
            stream llmq:requests  group llmq
            length 13 (+3)  lag 6 (+2)  pending 8 (=)
            replies/s  ok 10.0  error 3.0  (over 2.0s)
            errors/s   timeout 2.0  backend_error 0.5  dead_letter 0.5
            dead letters since start 1
            oldest pending age 12.3s  consumer worker-a  deliveries 2  idle 4.5s  id 1700000000000-0
            consumers 2
              name      pending  idle
              worker-a        5  250ms
              worker-b        3  1.5s
            replies llmq:replies 130 (+30)  dead llmq:dead 3 (+1)
            """)
        #expect(watch.deadLettersSinceStart == 1)
    }

    @Test("counters that go down show as a reset, never as a negative rate; dead letters keep counting after it")
    func reset() {
        var watch = StatusWatch()
        _ = watch.frame(for: snapshot(length: 0, counts: .init(ok: 50, error: 5, errorsByCode: ["dead_letter": 3, "timeout": 2])), elapsed: .zero)
        _ = watch.frame(for: snapshot(length: 0, counts: .init(ok: 60, error: 7, errorsByCode: ["dead_letter": 5, "timeout": 2])), elapsed: .seconds(1))
        #expect(watch.deadLettersSinceStart == 2)

        // The hash was deleted and two dead letters were counted since.
        let afterReset = watch.frame(for: snapshot(length: 0, counts: .init(ok: 1, error: 2, errorsByCode: ["dead_letter": 2])), elapsed: .seconds(1))
        #expect(lines(afterReset)[2] == "replies/s  counters reset (llmq:stats went down); rates from the next frame")
        #expect(!afterReset.contains("-"), "no negative number anywhere: \(afterReset)")
        #expect(lines(afterReset)[3] == "dead letters since start 4")
        #expect(watch.deadLettersSinceStart == 4)

        let next = watch.frame(for: snapshot(length: 0, counts: .init(ok: 3, error: 3, errorsByCode: ["dead_letter": 3])), elapsed: .milliseconds(500))
        #expect(lines(next)[2] == "replies/s  ok 4.0  error 2.0  (over 0.5s)")
        #expect(lines(next)[3] == "errors/s   dead_letter 2.0")
        #expect(watch.deadLettersSinceStart == 5)
    }

    @Test("a code that disappears is a reset; one that stays still is not listed")
    func changes() {
        let old = QueueStatus.ReplyCounts(ok: 5, error: 3, errorsByCode: ["timeout": 3])
        #expect(StatusWatch.change(from: old, to: .init(ok: 9, error: 3, errorsByCode: [:])) == .reset)
        #expect(StatusWatch.change(from: old, to: .zero) == .reset)
        #expect(StatusWatch.change(from: old, to: .init(ok: 9, error: 4, errorsByCode: ["timeout": 3, "backend_error": 1]))
            == .counted(.init(ok: 4, error: 1, errorsByCode: ["backend_error": 1])))
        let quiet = StatusWatch.frame(
            previous: snapshot(length: 0, counts: old), current: snapshot(length: 0, counts: old), elapsed: .seconds(1),
            deadLettersSinceStart: 0, width: nil)
        #expect(lines(quiet)[2] == "replies/s  ok 0.0  error 0.0  (over 1.0s)")
        #expect(lines(quiet)[3] == "errors/s   none")
    }

    @Test("at most five error codes, the busiest first")
    func topErrorCodes() {
        let codes = ["a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7]
        let frame = StatusWatch.frame(
            previous: snapshot(length: 0), current: snapshot(length: 0, counts: .init(ok: 0, error: 28, errorsByCode: codes)),
            elapsed: .seconds(1), deadLettersSinceStart: 0, width: nil)
        #expect(lines(frame)[3] == "errors/s   g 7.0  f 6.0  e 5.0  d 4.0  c 3.0  and 2 more codes")
    }

    @Test("twenty consumers by name, then how many more")
    func consumerCap() {
        let consumers = (0..<25).reversed().map { QueueStatus.Consumer(name: "c\($0 < 10 ? "0" : "")\($0)", pending: $0, idleMilliseconds: 1000 * $0) }
        let frame = StatusWatch.frame(
            previous: nil, current: snapshot(length: 0, lag: 0, consumers: consumers), elapsed: .zero,
            deadLettersSinceStart: 0, width: nil)
        let all = lines(frame)
        guard let start = all.firstIndex(of: "consumers 25") else {
            Issue.record("no consumer header in \(frame)")
            return
        }
        let rows = Array(all[(start + 2)...].prefix(21))
        #expect(rows.first == "  c00             0  0ms")
        #expect(rows[19] == "  c19            19  19.0s")
        #expect(rows[20] == "  and 5 more")
        #expect(!frame.contains("c20"))
    }

    @Test("no group yet, unknown lag, no pending entry, long idle times and a narrow terminal")
    func edges() {
        let noGroup = StatusWatch.frame(
            previous: nil, current: snapshot(length: 4, groupExists: false), elapsed: .zero, deadLettersSinceStart: 0, width: nil)
        #expect(lines(noGroup)[1] == "length 4  group not created yet (a worker creates it when it starts)")
        #expect(!noGroup.contains("consumers"))

        let quiet = StatusWatch.frame(
            previous: nil, current: snapshot(length: 0, lag: nil), elapsed: .zero, deadLettersSinceStart: 0, width: nil)
        #expect(lines(quiet)[1] == "length 0  lag ~0 (estimated)  pending 0")
        #expect(lines(quiet).contains("oldest pending none"))
        #expect(lines(quiet).contains("consumers 0"))

        #expect(StatusWatch.duration(999) == "999ms")
        #expect(StatusWatch.duration(245_000) == "4m05s")
        #expect(StatusWatch.duration(7_380_000) == "2h03m")

        let narrow = StatusWatch.frame(
            previous: nil, current: snapshot(length: 0, lag: 0), elapsed: .zero, deadLettersSinceStart: 0, width: 20)
        #expect(lines(narrow).allSatisfy { $0.count <= 20 })
        #expect(lines(narrow)[0] == "stream llmq:requests")
    }

    @Test("the stats hash is read leniently: bad fields are left out, an error reply is no hash")
    func replyCountsParsing() {
        let hash = RESPValue.array([
            .bulkString(Array("replies:ok".utf8)), .bulkString(Array("12".utf8)),
            .bulkString(Array("replies:error".utf8)), .bulkString(Array("-4".utf8)),
            .bulkString(Array("error:timeout".utf8)), .bulkString(Array("3".utf8)),
            .bulkString(Array("error:".utf8)), .bulkString(Array("9".utf8)),
            .bulkString(Array("error:bad".utf8)), .bulkString(Array("many".utf8)),
        ])
        #expect(QueueStatus.ReplyCounts(hash: hash) == .init(ok: 12, error: 0, errorsByCode: ["timeout": 3]))
        #expect(QueueStatus.ReplyCounts(hash: .error("WRONGTYPE Operation against a key holding the wrong kind of value")) == .zero)
        #expect(QueueStatus.ReplyCounts(hash: .array([])) == .zero)
    }

    @Test("JSON carries the counts under new keys and still decodes JSON written before them")
    func json() throws {
        let status = snapshot(length: 2, lag: 1, counts: .init(ok: 7, error: 1, errorsByCode: ["timeout": 1]))
        let encoded = try JSONEncoder().encode(status)
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        #expect(object["stats"] as? String == "llmq:stats")
        let counts = try #require(object["replyCounts"] as? [String: Any])
        #expect(counts["ok"] as? Int == 7)
        #expect((counts["errorsByCode"] as? [String: Int]) == ["timeout": 1])

        let old = #"{"consumers":[],"dead":"llmq:dead","deadLength":0,"group":"llmq","groupExists":false,"length":3,"pending":0,"replies":"llmq:replies","repliesLength":0,"stream":"llmq:requests"}"#
        let decoded = try JSONDecoder().decode(QueueStatus.self, from: Data(old.utf8))
        #expect(decoded.length == 3)
        #expect(decoded.replyCounts == .zero)
    }
}

@Suite("status --watch against Redis", .withRedis)
struct StatusWatchRedisTests {
    /// A stream of `entries` requests with a group, `delivered` of them read by `alpha`.
    private func prepare(_ client: RedisClient, entries: Int, delivered: Int) async throws {
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "$", "MKSTREAM")
        try await publish(client, count: entries, prompt: "p")
        _ = try await client.send("XREADGROUP", "GROUP", "llmq", "alpha", "COUNT", String(delivered), "STREAMS", "llmq:requests", ">")
    }

    @Test("two readings with replies counted between them make the frame's lag, pending and rates")
    func twoReadings() async throws {
        let client = try RedisFixture.current.client
        let streams = WorkerConfiguration.Streams()
        try await prepare(client, entries: 5, delivered: 2)
        _ = try await client.send("HINCRBY", "llmq:stats", "replies:ok", "10")
        _ = try await client.send("HINCRBY", "llmq:stats", "replies:error", "2")
        _ = try await client.send("HINCRBY", "llmq:stats", "error:timeout", "2")

        let before = try await QueueStatus.read(from: client, streams: streams)
        #expect(before.replyCounts == .init(ok: 10, error: 2, errorsByCode: ["timeout": 2]))
        #expect(before.lag == 3)
        #expect(before.pending == 2)

        try await publish(client, [("prompt", "late 1")])
        try await publish(client, [("prompt", "late 2")])
        _ = try await client.send("XREADGROUP", "GROUP", "llmq", "beta", "COUNT", "1", "STREAMS", "llmq:requests", ">")
        _ = try await client.send("HINCRBY", "llmq:stats", "replies:ok", "5")
        _ = try await client.send("HINCRBY", "llmq:stats", "replies:error", "2")
        _ = try await client.send("HINCRBY", "llmq:stats", "error:timeout", "1")
        _ = try await client.send("HINCRBY", "llmq:stats", "error:dead_letter", "1")
        let after = try await QueueStatus.read(from: client, streams: streams)

        var watch = StatusWatch()
        _ = watch.frame(for: before, elapsed: .zero)
        let frame = lines(watch.frame(for: after, elapsed: .seconds(1)))
        #expect(frame[1] == "length 7 (+2)  lag 4 (+1)  pending 3 (+1)")
        #expect(frame[2] == "replies/s  ok 5.0  error 2.0  (over 1.0s)")
        #expect(frame[3] == "errors/s   dead_letter 1.0  timeout 1.0")
        #expect(frame[4] == "dead letters since start 1")
        #expect(frame[5].hasPrefix("oldest pending age "))
        #expect(frame[5].contains("  consumer alpha  deliveries 1  idle "))
        #expect(frame[6] == "consumers 2")
        #expect(frame[8].hasPrefix("  alpha           2  "))
        #expect(frame[9].hasPrefix("  beta            1  "))
        #expect(frame[10] == "replies llmq:replies 0 (=)  dead llmq:dead 0 (=)")
    }

    @Test("no stats hash reads as zeros, and a stats key of another type does not break status")
    func missingOrWrongType() async throws {
        let client = try RedisFixture.current.client
        try await prepare(client, entries: 1, delivered: 1)
        let streams = WorkerConfiguration.Streams()
        #expect(try await QueueStatus.read(from: client, streams: streams).replyCounts == .zero)
        _ = try await client.send("SET", "llmq:stats", "not a hash")
        let status = try await QueueStatus.read(from: client, streams: streams)
        #expect(status.replyCounts == .zero)
        #expect(status.pending == 1)
        #expect(status.consumers.map(\.name) == ["alpha"])
    }
}

@Suite("llmq status --watch, the binary")
struct StatusWatchCommandTests {
    /// The test's Redis, with three requests (one delivered to alpha) and four replies counted.
    private func prepared() async throws -> RedisServer {
        let (redis, client) = try RedisFixture.current
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "$", "MKSTREAM")
        try await publish(client, count: 3, prompt: "p")
        _ = try await client.send("XREADGROUP", "GROUP", "llmq", "alpha", "COUNT", "1", "STREAMS", "llmq:requests", ">")
        _ = try await client.send("HINCRBY", "llmq:stats", "replies:ok", "4")
        return redis
    }

    @Test("--count 2 prints two plain frames separated by a blank line and exits 0", .withRedis)
    func twoFrames() async throws {
        let redis = try await prepared()
        let result = try await runProgram(
            try llmqExecutable().path, ["status", "--watch", "--count", "2", "--interval", "0.2", "--redis-url", redis.url])
        #expect(result.status == 0, "\(result.error)")
        #expect(!result.output.contains("\u{1B}"), "no escape codes when stdout is not a terminal")
        let frames = result.output.components(separatedBy: "\n\n")
        #expect(frames.count == 2, "\(result.output)")
        #expect(frames.allSatisfy { $0.hasPrefix("llmq status  ") && $0.contains("\nstream llmq:requests  group llmq\n") })
        #expect(frames.first?.contains("\nlength 3  lag 2  pending 1\n") == true)
        #expect(frames.last?.contains("\nlength 3 (=)  lag 2 (=)  pending 1 (=)\n") == true)
        #expect(frames.last?.contains("\nreplies/s  ok 0.0  error 0.0  (over ") == true)
        #expect(frames.last?.hasSuffix("replies llmq:replies 0 (=)  dead llmq:dead 0 (=)\n") == true)
    }

    @Test("--watch --json prints one JSON object per line per frame", .withRedis)
    func jsonLines() async throws {
        let redis = try await prepared()
        let result = try await runProgram(
            try llmqExecutable().path, ["status", "--watch", "--json", "--count", "2", "--interval", "0.2", "--redis-url", redis.url])
        #expect(result.status == 0, "\(result.error)")
        let jsonLines = result.output.split(separator: "\n")
        #expect(jsonLines.count == 2, "\(result.output)")
        for line in jsonLines {
            let status = try JSONDecoder().decode(QueueStatus.self, from: Data(line.utf8))
            #expect(status.length == 3)
            #expect(status.pending == 1)
            #expect(status.replyCounts.ok == 4)
        }
    }

    @Test("Ctrl-C ends the watch with status 0", .withRedis)
    func interrupt() async throws {
        let redis = try await prepared()
        let process = Process()
        process.executableURL = try llmqExecutable()
        process.arguments = ["status", "--watch", "--interval", "0.2", "--redis-url", redis.url]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        let collected = OutputCollector()
        try process.run()
        PipeReader.follow(output.fileHandleForReading, into: collected)
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let deadline = ContinuousClock.now + .seconds(20)
        while collected.output.components(separatedBy: "llmq status  ").count < 3, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(collected.output.components(separatedBy: "llmq status  ").count >= 3, "two frames before Ctrl-C: \(collected.output)")
        kill(process.processIdentifier, SIGINT)
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!process.isRunning)
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 0)
    }

    @Test("--count without --watch, or a zero interval, is refused")
    func refused() async throws {
        let binary = try llmqExecutable().path
        #expect(try await runProgram(binary, ["status", "--count", "2"]).status != 0)
        let zero = try await runProgram(binary, ["status", "--watch", "--interval", "0"])
        #expect(zero.status != 0)
        #expect(zero.error.contains("--interval must be between 0.05 and 86400 seconds"))
    }
}
