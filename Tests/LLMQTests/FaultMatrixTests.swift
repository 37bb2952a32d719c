import Foundation
import LLMQBackends
@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
import LLMQRedis
import LLMQSimulator
@testable import LLMQWorker
import Testing

/// Every command on a request's path, every way a connection or the server can fail it, every
/// kind of request: exactly one reply, exactly one `done` chunk equal to the reply, nothing
/// pending, nothing lost. A worker talks to a real redis-server (with a replica, for `WAIT`)
/// through ``FaultProxy``, which injects one fault per cell.
@Suite("Fault matrix: commands x faults x kinds of request", .serialized, .timeLimit(.minutes(10)))
struct FaultMatrixTests {
    enum Target: String, CaseIterable {
        case read = "read (XREADGROUP; fair: the take script)"
        case claim = "claim (script)"
        case refresh = "refresh (script)"
        case chunk = "chunk write (script)"
        case reply = "reply (script)"
        case wait = "WAIT"
        case fairRelease = "fair release (script)"
        case fairRenew = "fair renew (script)"

        /// Only fair intake sends these.
        var fairOnly: Bool { self == .fairRelease || self == .fairRenew }
    }

    enum Fault: CaseIterable {
        case dropBefore, dropAfter, transient

        var name: String {
            switch self {
            case .dropBefore: "drop before"
            case .dropAfter: "drop after"
            case .transient: "transient error"
            }
        }
    }

    enum Kind: String, CaseIterable {
        case plain
        case replyTo = "reply_to"
        case streamed
        case deleted = "deleted while running"
        case claimed = "claimed from a stalled worker"

        var streams: Bool { self == .streamed || self == .deleted || self == .claimed }
    }

    /// The transient errors a server answers, one per cell in turn.
    static let transientErrors = [
        "OOM command not allowed when used memory > 'maxmemory'.", "BUSY Redis is busy running a script.",
        "LOADING Redis is loading the dataset in memory", "READONLY You can't write against a read only replica.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
    ]

    struct Cell {
        var target: Target
        var fault: Fault
        var kind: Kind
        var fired: Int
        var problems: [String]
        var milliseconds: Int
    }

    /// With fair intake (`users.fair`), the read is the fair take script and the requests name a
    /// user, so their running marks are renewed and released too.
    @Test(
        "Exactly one reply and one done, nothing pending, for every cell", .withRedis, .withFaultProxy,
        .withSimulator(.init(slots: 16, tokenMilliseconds: 20)), arguments: [false, true])
    func matrix(fair: Bool) async throws {
        let (primary, client) = try RedisFixture.current
        let replica = try await RedisServer.start(options: ["--replicaof", "127.0.0.1", String(primary.port)])
        _ = replica
        // Until the replica is in sync, WAIT would find none.
        let synced = ContinuousClock.now + .seconds(10)
        while (try await client.send("WAIT", "1", "100").int ?? 0) < 1, ContinuousClock.now < synced {}
        let proxy = try FaultProxyFixture.current
        let sim = try SimulatorFixture.current
        var shas: [String: String] = [:]
        let scripts = [
            ("claim", Scripts.claim), ("touch", Scripts.touch), ("chunks", Scripts.chunks), ("reply", Scripts.reply),
            ("fairTake", Scripts.fairTake), ("fairRelease", Scripts.fairRelease), ("fairRenew", Scripts.fairRenew),
        ]
        for (name, script) in scripts {
            shas[name] = try await client.send("SCRIPT", "LOAD", script.source).string
        }
        func runs(_ script: String) -> @Sendable ([String]) -> Bool {
            let sha = shas[script] ?? ""
            let source = scripts.first { $0.0 == script }!.1.source
            return { arguments in
                guard arguments.count > 1 else { return false }
                let name = arguments[0].uppercased()
                return (name == "EVALSHA" && arguments[1] == sha) || (name == "EVAL" && arguments[1] == source)
            }
        }
        func matches(_ target: Target) -> @Sendable ([String]) -> Bool {
            switch target {
            case .read where fair: runs("fairTake")
            case .read: { $0.first?.uppercased() == "XREADGROUP" }
            case .claim: runs("claim")
            case .refresh: runs("touch")
            case .chunk: runs("chunks")
            case .reply: runs("reply")
            case .wait: { $0.first?.uppercased() == "WAIT" }
            case .fairRelease: runs("fairRelease")
            case .fairRenew: runs("fairRenew")
            }
        }

        var cells: [Cell] = []
        var errorIndex = 0
        for target in Target.allCases where fair || !target.fairOnly {
            for fault in Fault.allCases {
                for kind in Kind.allCases {
                    _ = try await client.send("FLUSHALL")
                    proxy.clearRules()
                    let action: FaultProxy.Action
                    switch fault {
                    case .dropBefore: action = .dropBefore
                    case .dropAfter: action = .dropAfter
                    case .transient:
                        action = .error(Self.transientErrors[errorIndex % Self.transientErrors.count])
                        errorIndex += 1
                    }
                    let started = ContinuousClock.now
                    let (fired, problems) = try await runCell(
                        target: target, kind: kind, action: action, matches: matches(target), proxy: proxy,
                        client: client, sim: sim, fair: fair)
                    cells.append(Cell(
                        target: target, fault: fault, kind: kind, fired: fired, problems: problems,
                        milliseconds: Int((ContinuousClock.now - started).fractionalMilliseconds)))
                }
            }
        }
        await sim.stop()
        print(Self.table(cells))
        let failed = cells.filter { !$0.problems.isEmpty }
        #expect(failed.isEmpty, "\(failed.map { "\($0.target.rawValue) / \($0.fault.name) / \($0.kind.rawValue): \($0.problems)" })")
        // Each fault must have hit its command on every path that has it: a matrix whose faults
        // never fire proves nothing.
        let missed = cells.filter { $0.fired == 0 && Self.onPath($0.target, $0.kind, fair: fair) }
        #expect(missed.isEmpty, "faults that never fired: \(missed.map { "\($0.target.rawValue) / \($0.fault.name) / \($0.kind.rawValue)" })")
    }

    /// Whether a request of this kind goes through this command.
    static func onPath(_ target: Target, _ kind: Kind, fair: Bool) -> Bool {
        switch target {
        case .chunk: kind.streams
        case .read, .claim, .refresh, .reply, .wait: true
        // A request a stalled consumer took never went through the fair take: no mark to end.
        case .fairRelease: fair && kind != .claimed
        case .fairRenew: fair
        }
    }

    private func runCell(
        target: Target, kind: Kind, action: FaultProxy.Action, matches: @escaping @Sendable ([String]) -> Bool,
        proxy: FaultProxy, client: RedisClient, sim: RunningSimulator, fair: Bool
    ) async throws -> (fired: Int, problems: [String]) {
        var problems: [String] = []
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        var fields = [("prompt", "matrix"), ("max_tokens", kind == .deleted ? "45" : "20"), ("id", "m")]
        if fair { fields.append(("user", "matrix-user")) }
        if kind.streams { fields.append(("stream", "1")) }
        if kind == .replyTo { fields.append(("reply_to", "llmq:mine")) }
        let entry = try await publish(client, fields)
        if kind == .claimed {
            // A consumer took it, streamed part of an answer, and stalled long ago.
            _ = try await client.send("XREADGROUP", "GROUP", "llmq", "stalled", "COUNT", "1", "STREAMS", "llmq:requests", ">")
            _ = try await client.send("XCLAIM", "llmq:requests", "llmq", "stalled", "0", entry, "IDLE", "100000", "JUSTID")
            _ = try await publish(client, [("id", "m"), ("seq", "0"), ("delivery", "1"), ("delta", "void ")], stream: "llmq:stream:\(entry)")
        }
        // Transient errors go on for a while (three in a row); a dropped connection is one event.
        let times = if case .error = action { 3 } else { 1 }
        let rule = proxy.add(FaultProxy.Rule(name: "cell", matches: matches, nth: 1, times: times, action: action))

        var redis = proxy.configuration
        redis.waitReplicas = 1
        redis.waitTimeout = .milliseconds(500)
        var configuration = WorkerConfiguration(consumer: "matrix", backend: BackendConfiguration(kind: .llamaCpp, endpoint: sim.url))
        configuration.redis = redis
        configuration.concurrency = 2
        configuration.readBlock = .milliseconds(100)
        configuration.claimIdle(after: .milliseconds(450), every: .milliseconds(100))
        configuration.retry.initialBackoff = .milliseconds(20)
        configuration.retry.maxBackoff = .milliseconds(200)
        configuration.shutdownGrace = .seconds(5)
        configuration.users.fair = fair
        let worker = try RunningWorker.start(configuration)
        if kind == .deleted {
            // Deleted by its producer once this worker has it.
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                let pending = try await client.send("XPENDING", "llmq:requests", "llmq", "-", "+", "1")
                if pending.array?.first?.array?[1].string == "matrix" { break }
                try await Task.sleep(for: .milliseconds(5))
            }
            _ = try await client.send("XDEL", "llmq:requests", entry)
        }
        let replyStream = kind == .replyTo ? "llmq:mine" : "llmq:replies"
        let replies: [[String: String]]
        do {
            replies = try await waitForReplies(client, count: 1, stream: replyStream, timeout: .seconds(20))
        } catch {
            await worker.stop()
            return (proxy.fired(rule), ["no reply: \(error)"])
        }
        // Time for a second reply or a late chunk to show up.
        try await Task.sleep(for: .milliseconds(700))
        await worker.stop()
        let all = try await readReplies(client, stream: replyStream)
        let other = try await readReplies(client, stream: kind == .replyTo ? "llmq:replies" : "llmq:mine")
        if all.count != 1 || !other.isEmpty { problems.append("\(all.count) replies on \(replyStream), \(other.count) elsewhere") }
        let reply = replies[0]
        // The one cell where no worker ever saw the request: the read that delivered it lost its
        // answer with the connection, and the producer deleted it before the claim brought it
        // back. Its fields are gone, so the honest answer is request_lost, with no chunk stream
        // (whether it wanted one was in the fields).
        let neverSeen = target == .read && action == .dropAfter && kind == .deleted
        if neverSeen {
            if reply["error_code"] != "request_lost" { problems.append("expected request_lost, got \(reply)") }
        } else if reply["status"] != "ok" {
            problems.append("status \(reply["status"] ?? "") \(reply["error_code"] ?? ""): \(reply["error"] ?? "")")
        }
        for field in ["reply_error", "stream_error"] where reply[field] != nil { problems.append("\(field): \(reply[field]!)") }
        if kind.streams && !neverSeen {
            let chunks = try await ReadChunks.read(client, "llmq:stream:\(entry)", id: "m")
            problems += chunks.problems
            if chunks.done?["status"] != reply["status"] { problems.append("done chunk says \(chunks.done?["status"] ?? "nothing")") }
            if chunks.text != reply["content"] { problems.append("the chunks rebuild to other text than the reply") }
        }
        let pending = try await client.send("XPENDING", "llmq:requests", "llmq").array?.first?.int ?? -1
        if pending != 0 { problems.append("\(pending) pending") }
        let left = try await client.send("XLEN", "llmq:requests").int ?? -1
        if left != 0 { problems.append("\(left) entries left in the request stream") }
        if fair {
            // Its user's mark is gone once the request ended, or expires within the claim idle time.
            let users = try await client.send("ZCARD", "llmq:requests:fair:users").int ?? -1
            if users != 0 { problems.append("\(users) users still waiting") }
            let deadline = ContinuousClock.now + .seconds(2)
            var running = -1
            repeat {
                let now = try await QueueStatus.redisMilliseconds(client)
                running = try await client.send("ZCOUNT", "llmq:requests:fair:running:matrix-user", "(\(now)", "+inf").int ?? -1
                if running == 0 { break }
                try await Task.sleep(for: .milliseconds(50))
            } while ContinuousClock.now < deadline
            if running != 0 { problems.append("\(running) requests of the user still marked running") }
        }
        return (proxy.fired(rule), problems)
    }

    static func table(_ cells: [Cell]) -> String {
        var lines = ["fault matrix: \(cells.count) cells, \(cells.reduce(0) { $0 + $1.fired }) faults injected, \(cells.filter { $0.problems.isEmpty }.count) passed"]
        let kinds = Kind.allCases
        lines.append(
            "| command | fault | " + kinds.map(\.rawValue).joined(separator: " | ") + " |")
        lines.append("|---|---|" + kinds.map { _ in "---" }.joined(separator: "|") + "|")
        for target in Target.allCases where cells.contains(where: { $0.target == target }) {
            for fault in Fault.allCases {
                let row = kinds.map { kind -> String in
                    guard let cell = cells.first(where: { $0.target == target && $0.fault == fault && $0.kind == kind }) else { return "" }
                    let outcome = cell.problems.isEmpty ? "ok" : "FAIL"
                    let fired = cell.fired == 0 ? "not on path" : "\(cell.fired)x"
                    return "\(outcome), \(fired), \(cell.milliseconds) ms"
                }
                lines.append("| \(target.rawValue) | \(fault.name) | " + row.joined(separator: " | ") + " |")
            }
        }
        return lines.joined(separator: "\n")
    }
}
