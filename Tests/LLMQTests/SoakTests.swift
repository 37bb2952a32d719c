import Foundation
import Glibc
import LLMQRedis
import Testing

/// Faults that combine, against worker processes as users run them: `make test` runs it with
/// the debug binary and 300 requests; `make soak` (in CI) with the release binary (`LLMQ_BIN`)
/// and 2,000, both under `MALLOC_PERTURB_`, which turns a lock or buffer that was never
/// initialised into a crash instead of luck.
@Suite("Soak: three workers, one configuration, combined faults", .serialized, .timeLimit(.minutes(6)), .withRedis)
struct SoakTests {
    /// Once in arrival order, once with fair intake (`users.fair`, the requests of seven users).
    @Test(
        "Backend errors, a stalled worker, a killed worker, dropped connections and Redis out of memory: one reply each, one done each, nothing pending",
        arguments: [false, true])
    func combinedFaults(fair: Bool) async throws {
        let total = Int(ProcessInfo.processInfo.environment["LLMQ_SOAK_REQUESTS"] ?? "") ?? 300
        let (redis, client) = try RedisFixture.current
        _ = try await client.send("FLUSHALL")
        let sim = try await SimProcess([
            "--slots", "8", "--token-ms", "4", "--fail-rate", "0.03", "--mid-stream-error-rate", "0.03", "--max-queue", "100000",
        ])
        // One configuration for every worker, as `docker compose --scale` runs them.
        let environment = workerEnvironment(
            redis: redis, endpoint: sim.url, quickTakeover, ["LLMQ_CONCURRENCY": "4", "LLMQ_RETRY_MAX_ATTEMPTS": "4", "LLMQ_LOG_LEVEL": "error", "LLMQ_USERS_FAIR": String(fair)])
        let workers = try (0..<3).map { try WorkerProcess.start(name: "soak-\($0)", environment: environment) }

        // Producers publish at a steady pace, retrying what Redis refuses (out of memory).
        let publisher = Task {
            for index in 0..<total {
                var fields = [("prompt", "soak \(index)"), ("max_tokens", String(4 + index % 24)), ("id", "r\(index)")]
                if index % 3 == 0 { fields.append(("stream", "1")) }
                if index % 6 == 1 { fields.append(("reply_to", "llmq:soak-replies")) }
                if fair { fields.append(("user", "user-\(index % 7)")) }
                while (try? await publish(client, fields)) == nil { try await Task.sleep(for: .milliseconds(50)) }
                try await Task.sleep(for: .milliseconds(max(1, 8_000 / total)))
            }
        }
        var faults: [String] = []
        func at(_ seconds: Double, _ name: String, _ fault: () async throws -> Void) async throws {
            try await Task.sleep(for: .seconds(seconds))
            try await fault()
            faults.append(name)
        }
        try await at(1, "CLIENT KILL TYPE normal") { _ = try await client.send("CLIENT", "KILL", "TYPE", "normal") }
        try await at(0.5, "SIGSTOP soak-1 for 2.5 s (its entries are claimed)") { workers[1].signal(SIGSTOP) }
        try await at(1, "kill -9 soak-2") { workers[2].signal(SIGKILL) }
        try await at(1, "restart soak-2") { try workers[2].start() }
        try await at(0.5, "SIGCONT soak-1") { workers[1].signal(SIGCONT) }
        try await at(0.5, "maxmemory 1 for 2 s") { _ = try await client.send("CONFIG", "SET", "maxmemory", "1") }
        try await at(2, "maxmemory 0") { _ = try await client.send("CONFIG", "SET", "maxmemory", "0") }
        try await at(0.5, "CLIENT KILL TYPE normal") { _ = try await client.send("CLIENT", "KILL", "TYPE", "normal") }
        try await publisher.value

        let deadline = ContinuousClock.now + .seconds(120)
        var replies: [[String: String]] = []
        while ContinuousClock.now < deadline {
            replies = try await readReplies(client) + readReplies(client, stream: "llmq:soak-replies")
            if replies.count >= total { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        try await Task.sleep(for: .seconds(1))
        replies = try await readReplies(client) + readReplies(client, stream: "llmq:soak-replies")
        let byID = Dictionary(grouping: replies) { $0["id"] ?? "" }
        let missing = (0..<total).filter { byID["r\($0)"] == nil }
        let duplicated = byID.filter { $0.value.count > 1 }.keys.sorted()
        #expect(missing.isEmpty, "no reply for \(missing.prefix(20))")
        #expect(duplicated.isEmpty, "several replies for \(duplicated.prefix(20))")
        #expect(replies.allSatisfy { $0["reply_error"] == nil }, "a reply was rerouted")
        let routed = Set(try await readReplies(client, stream: "llmq:soak-replies").compactMap { $0["id"] })
        #expect(routed == Set((0..<total).filter { $0 % 6 == 1 }.map { "r\($0)" }), "every reply_to request answered on its reply_to, and only those")
        #expect(try await client.send("XPENDING", "llmq:requests", "llmq").array?.first?.int == 0, "nothing pending")

        var streamProblems: [String] = []
        for reply in replies where reply["stream"] != nil {
            let chunks = try await ReadChunks.read(client, reply["stream"]!)
            if !chunks.problems.isEmpty { streamProblems.append("\(reply["id"] ?? ""): \(chunks.problems)") }
            if chunks.done?["status"] != reply["status"] { streamProblems.append("\(reply["id"] ?? ""): done says \(chunks.done?["status"] ?? "nothing")") }
            if reply["status"] == "ok" && chunks.text != reply["content"] { streamProblems.append("\(reply["id"] ?? ""): text differs") }
        }
        #expect(streamProblems.isEmpty, "\(streamProblems.prefix(10))")
        let statuses = Dictionary(grouping: replies) { $0["error_code"] ?? ($0["status"] ?? "") }.mapValues(\.count)
        print("soak (users.fair \(fair)): \(total) requests, \(replies.count) replies \(statuses.sorted { $0.key < $1.key }), faults: \(faults.joined(separator: "; ")), binary \(try llmqExecutable().path), MALLOC_PERTURB_=\(ProcessInfo.processInfo.environment["MALLOC_PERTURB_"] ?? "unset")")

        for worker in workers {
            #expect(worker.isRunning, "\(worker.name) died: \(worker.output.suffix(2000))")
            #expect(!worker.output.contains("Fatal error"), "\(worker.name): \(worker.output.suffix(2000))")
            worker.signal(SIGTERM)
        }
        for worker in workers { _ = await worker.waitForExit() }
    }
}
