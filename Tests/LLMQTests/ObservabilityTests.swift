import Foundation
import Glibc
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import LLMQSimulator
import LLMQTestSupport
import LLMQWorker
import Testing

/// The environment of a worker process with its metrics listener on `metricsPort`.
private func metricsEnvironment(redis: RedisServer, backend: String, metricsPort: Int, extra: [String: String] = [:]) -> [String: String] {
    let metrics = [
        "LLMQ_METRICS_PORT": String(metricsPort), "LLMQ_METRICS_QUEUE_INTERVAL_MS": "100", "LLMQ_LOG_LEVEL": "warning",
        "LLMQ_SHUTDOWN_GRACE_SECONDS": "10",
    ]
    return workerEnvironment(redis: redis, endpoint: backend, metrics, extra)
}

/// The three numbers KEDA's redis-streams scaler reads: `XLEN`, the `XPENDING` count and the
/// group's `lag` from `XINFO GROUPS`.
private struct QueueNumbers: Equatable, CustomStringConvertible {
    var length: Int
    var pending: Int
    var lag: Int

    var description: String { "length \(length), pending \(pending), lag \(lag)" }

    static func fromRedis(_ client: RedisClient) async throws -> QueueNumbers {
        let length = try await client.send("XLEN", "llmq:requests").int ?? -1
        let pending = try await client.send("XPENDING", "llmq:requests", "llmq").array?.first?.int ?? -1
        let groups = try await client.send("XINFO", "GROUPS", "llmq:requests").array ?? []
        var lag = -1
        for group in groups {
            let info = Dictionary((group.pairs ?? []).map { ($0.name.string ?? "", $0.value) }, uniquingKeysWith: { $1 })
            if info["name"]?.string == "llmq" { lag = info["lag"]?.int ?? -1 }
        }
        return QueueNumbers(length: length, pending: pending, lag: lag)
    }

    static func fromStatus(_ redis: RedisServer) async throws -> QueueNumbers {
        let result = try await runProgram(try llmqExecutable().path, ["status", "--json", "--redis-url", redis.url])
        guard result.status == 0, let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any] else {
            throw TestFailure("llmq status --json failed: \(result.error)")
        }
        return QueueNumbers(
            length: object["length"] as? Int ?? -1, pending: object["pending"] as? Int ?? -1, lag: object["lag"] as? Int ?? -1)
    }

    static func fromMetrics(port: Int) async throws -> QueueNumbers {
        let scrape = try await Scrape.take(port: port)
        func gauge(_ name: String) -> Int {
            scrape.value(name, ["stream": "llmq:requests", "group": "llmq"]).map { Int($0) } ?? -1
        }
        return QueueNumbers(length: gauge("llmq_queue_length"), pending: gauge("llmq_queue_pending"), lag: gauge("llmq_queue_lag"))
    }
}

@Suite("Observability: metrics, health, logs, tidy consumers", .serialized, .withRedis)
struct ObservabilityTests {
    @Test("Under faults from llmq sim, /metrics counts exactly the replies in the reply stream, and promtool accepts a scrape taken under load")
    func metricsMatchReplies() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try await SimProcess([
            "--slots", "8", "--token-ms", "2", "--fail-rate", "0.15", "--busy-rate", "0.1", "--rate-limit-rate", "0.05",
            "--hang-rate", "0.03", "--hang-ms", "3000", "--seed", "7",
        ])
        // Three entries a crashed consumer took, delivered twice already: the next delivery
        // exceeds maxDeliveries and dead-letters them.
        try await publish(client, count: 3, prompt: "ghost ")
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        try await abandonNextEntries(client, count: 3, deliveries: 2)

        let metricsPort = try freePort()
        try WorkerProcess.start(name: "metrics", environment: metricsEnvironment(
            redis: redis, backend: sim.url, metricsPort: metricsPort, extra: [
                "LLMQ_CONCURRENCY": "8", "LLMQ_RETRY_MAX_ATTEMPTS": "2", "LLMQ_RETRY_INITIAL_BACKOFF_MS": "10",
                "LLMQ_RETRY_MAX_BACKOFF_MS": "50", "LLMQ_BACKEND_TIMEOUT_SECONDS": "1", "LLMQ_BREAKER_FAILURE_THRESHOLD": "1000",
                "LLMQ_RECOVERY_CLAIM_MIN_IDLE_MS": "500", "LLMQ_RECOVERY_CLAIM_INTERVAL_MS": "200", "LLMQ_RECOVERY_MAX_DELIVERIES": "2",
            ]))
        _ = try await waitForHTTP("http://127.0.0.1:\(metricsPort)/readyz", status: 200)

        var expected = 3
        for index in 0..<150 {
            try await publish(client, [("prompt", "question \(index)"), ("max_tokens", String(4 + index % 12))])
        }
        for _ in 0..<10 { try await publish(client, [("max_tokens", "5")]) }  // no prompt
        for _ in 0..<5 { try await publish(client, [("prompt", "hi"), ("max_tokens", "lots")]) }
        expected += 165

        // A scrape while requests are in flight passes Prometheus' own linter.
        try await Task.sleep(for: .milliseconds(300))
        let underLoad = try await Scrape.take(port: metricsPort)
        #expect((underLoad.value("llmq_requests_in_flight") ?? 0) > 0, "scraped while requests run")
        let lint = try await promtoolCheckMetrics(underLoad.text)
        #expect(lint.status == 0, "promtool check metrics: \(lint.output)")

        let replies = try await waitForReplies(client, count: expected, timeout: .seconds(90))
        #expect(replies.count == expected)
        // The counters move right after each reply is written; give the last ones a moment.
        var scrape = try await Scrape.take(port: metricsPort)
        for _ in 0..<50 where scrape.value("llmq_replies_total") != Double(expected) {
            try await Task.sleep(for: .milliseconds(50))
            scrape = try await Scrape.take(port: metricsPort)
        }

        struct Key: Hashable { var status, code, backend: String }
        let fromStream = Dictionary(grouping: replies) { Key(status: $0["status"] ?? "", code: $0["error_code"] ?? "", backend: $0["backend"] ?? "") }
            .mapValues(\.count)
        var fromMetrics: [Key: Int] = [:]
        for sample in scrape.samples where sample.name == "llmq_replies_total" {
            fromMetrics[Key(status: sample.labels["status"] ?? "", code: sample.labels["error_code"] ?? "", backend: sample.labels["backend"] ?? "")] = Int(sample.value)
        }
        #expect(fromMetrics == fromStream)
        // The faults did happen: several kinds of error, and dead letters.
        #expect(Set(fromStream.keys.map(\.code)).count >= 4, "error codes seen: \(fromStream.keys.map(\.code))")
        #expect(fromStream[Key(status: "error", code: "dead_letter", backend: "")] == 3)
        #expect(scrape.value("llmq_dead_letters_total") == 3)
        #expect(try await client.send("XLEN", "llmq:dead").int == 3)

        // The stats hash the reply script keeps says the same.
        let stats = Dictionary(
            ((try await client.send("HGETALL", "llmq:stats")).pairs ?? []).map { ($0.name.string ?? "", Int($0.value.string ?? "") ?? -1) },
            uniquingKeysWith: { $1 })
        #expect(stats["replies:ok"] == replies.filter { $0["status"] == "ok" }.count)
        #expect(stats["replies:error"] == replies.filter { $0["status"] == "error" }.count)
        for (code, count) in Dictionary(grouping: replies.compactMap { $0["error_code"] }, by: { $0 }).mapValues(\.count) {
            #expect(stats["error:\(code)"] == count, "error:\(code)")
        }

        // `llmq status --json` reads the same counts.
        let status = try await runProgram(try llmqExecutable().path, ["status", "--json", "--redis-url", redis.url])
        let counts = (try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any])?["replyCounts"] as? [String: Any]
        #expect(counts?["ok"] as? Int == stats["replies:ok"] && counts?["error"] as? Int == stats["replies:error"], "\(status.output)")
        #expect((counts?["errorsByCode"] as? [String: Int])?["dead_letter"] == 3)

        // Attempts, tokens and timings agree with the replies' own fields.
        let attempts = replies.compactMap { $0["attempts"].flatMap { Int($0) } }.reduce(0, +)
        #expect(scrape.value("llmq_backend_attempts_total").map { Int($0) } == attempts)
        #expect((scrape.value("llmq_backend_retries_total") ?? 0) > 0)
        let completionTokens = replies.compactMap { $0["completion_tokens"].flatMap { Int($0) } }.reduce(0, +)
        #expect(scrape.value("llmq_backend_completion_tokens_total").map { Int($0) } == completionTokens)
        #expect(scrape.value("llmq_queue_wait_seconds_count").map { Int($0) } == expected)
        #expect(scrape.value("llmq_overhead_seconds_count").map { Int($0) } == expected)
        #expect(scrape.value("llmq_claims_total") == 3)
        #expect(scrape.value("llmq_concurrency_limit") == 8)
        #expect(scrape.value("llmq_ready") == 1)

        // Every family has help text from the catalogue.
        let families = Set(scrape.samples.map(\.name).map { name in
            ["_bucket", "_sum", "_count"].reduce(name) { name, suffix in
                name.hasSuffix(suffix) && scrape.helpedFamilies.contains(String(name.dropLast(suffix.count))) ? String(name.dropLast(suffix.count)) : name
            }
        })
        #expect(families.subtracting(scrape.helpedFamilies).isEmpty)
        #expect(try await promtoolCheckMetrics(scrape.text).status == 0)
    }

    @Test("While a queue fills, is served and drains, llmq status --json and /metrics report what KEDA reads (XLEN, XPENDING, XINFO GROUPS lag), and lag ends at 0")
    func kedaSeesWhatLLMQReports() async throws {
        let (redis, client) = try RedisFixture.current
        // Two slots, about 1.5 s a request: the queue changes every 1.5 s, slowly enough to
        // compare the three views between changes.
        let sim = try await SimProcess(["--slots", "2", "--token-ms", "75"])
        let metricsPort = try freePort()
        try WorkerProcess.start(name: "keda", environment: metricsEnvironment(
            redis: redis, backend: sim.url, metricsPort: metricsPort, extra: ["LLMQ_CONCURRENCY": "2"]))
        _ = try await waitForHTTP("http://127.0.0.1:\(metricsPort)/readyz", status: 200)

        /// Reads Redis, then status and metrics, then Redis again; when Redis did not change
        /// meanwhile, the other two must say exactly what it said.
        func observe(_ step: String) async throws -> QueueNumbers {
            for _ in 0..<30 {
                let before = try await QueueNumbers.fromRedis(client)
                try await Task.sleep(for: .milliseconds(250))  // > 2 gauge intervals
                let status = try await QueueNumbers.fromStatus(redis)
                let metrics = try await QueueNumbers.fromMetrics(port: metricsPort)
                let after = try await QueueNumbers.fromRedis(client)
                guard before == after else { continue }
                #expect(status == before, "\(step): llmq status --json says \(status), Redis \(before)")
                #expect(metrics == before, "\(step): /metrics says \(metrics), Redis \(before)")
                return before
            }
            throw TestFailure("\(step): the queue never held still for a comparison")
        }

        let empty = try await observe("empty")
        #expect(empty == QueueNumbers(length: 0, pending: 0, lag: 0))

        try await publish(client, count: 6, prompt: "a ", maxTokens: 20)
        let filling = try await observe("filling")
        #expect(filling.pending == 2 && filling.lag > 0 && filling.length == filling.lag + filling.pending, "\(filling)")

        try await publish(client, count: 6, prompt: "b ", maxTokens: 20)
        let filled = try await observe("filled")
        #expect(filled.lag > filling.lag, "lag grows with the backlog: \(filling) then \(filled)")

        let deadline = ContinuousClock.now + .seconds(60)
        var serving = filled
        // Until Redis says 0: after an out-of-order answer Redis 7.0 reports no lag at all (-1
        // here) for a while, which is not the end of the backlog.
        while serving.lag != 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            serving = try await QueueNumbers.fromRedis(client)
        }
        let draining = try await observe("draining")
        #expect(draining.lag == 0 && draining.pending <= 2, "\(draining)")

        _ = try await waitForReplies(client, count: 12, timeout: .seconds(60))
        let done = try await observe("done")
        #expect(done == QueueNumbers(length: 0, pending: 0, lag: 0), "scale-to-zero condition: \(done)")
    }

    @Test("When Redis cannot tell the lag (the last delivered entry answered before an older one), status and the gauge estimate it as length - pending")
    func lagEstimate() async throws {
        let client = try RedisFixture.current.client
        for index in 1...5 { _ = try await client.send("XADD", "llmq:requests", "\(index)-0", "prompt", "p") }
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0")
        _ = try await client.send("XREADGROUP", "GROUP", "llmq", "w", "COUNT", "2", "STREAMS", "llmq:requests", ">")
        // What the reply script does when 2-0 is answered before 1-0.
        _ = try await client.send("XACK", "llmq:requests", "llmq", "2-0")
        _ = try await client.send("XDEL", "llmq:requests", "2-0")
        var status = try await QueueStatus.read(from: client, streams: .init())
        #expect(status.lag == nil, "Redis 7.0 reports no lag here")
        #expect(status.length == 4 && status.pending == 1 && status.lagOrEstimate == 3)
        #expect(status.text.contains("lag ~3 (estimated"), "\(status.text)")
        // Once the older entry is answered too, Redis knows again, and says the same.
        _ = try await client.send("XACK", "llmq:requests", "llmq", "1-0")
        _ = try await client.send("XDEL", "llmq:requests", "1-0")
        status = try await QueueStatus.read(from: client, streams: .init())
        #expect(status.lag == 3 && status.lagOrEstimate == 3)
    }

    @Test("/healthz stays 200 while /readyz reports Redis down and an open circuit without fallback; llmq health exits accordingly")
    func healthEndpoints() async throws {
        let (redis, client) = try RedisFixture.current
        let deadBackend = try freePort()
        let metricsPort = try freePort()
        try WorkerProcess.start(name: "health", environment: metricsEnvironment(
            redis: redis, backend: "http://127.0.0.1:\(deadBackend)", metricsPort: metricsPort, extra: [
                "LLMQ_RETRY_MAX_ATTEMPTS": "1", "LLMQ_BREAKER_FAILURE_THRESHOLD": "1", "LLMQ_BREAKER_OPEN_SECONDS": "600",
            ]))
        let base = "http://127.0.0.1:\(metricsPort)"
        _ = try await waitForHTTP(base + "/readyz", status: 200)
        let llmq = try llmqExecutable().path
        #expect(try await runProgram(llmq, ["health", "--ready", "--port", String(metricsPort)]).status == 0)

        await redis.kill()
        let down = try await waitForHTTP(base + "/readyz", status: 503)
        #expect(down.contains("Redis unreachable"), "\(down)")
        #expect(try await httpGet(base + "/healthz").status == 200, "Redis down is not a reason to restart the worker")
        #expect(try await runProgram(llmq, ["health", "--ready", "--port", String(metricsPort)]).status == 1)
        #expect(try await runProgram(llmq, ["health", "--port", String(metricsPort)]).status == 0)
        #expect(try await Scrape.take(port: metricsPort).value("llmq_ready") == 0)

        try await redis.restart()
        _ = try await waitForHTTP(base + "/readyz", status: 200)
        #expect((try await Scrape.take(port: metricsPort).value("llmq_redis_reconnects_total") ?? 0) >= 1)

        // One refused request opens the circuit; with no fallback the worker is not ready.
        try await publish(client, [("prompt", "anyone there?")])
        let replies = try await waitForReplies(client, count: 1)
        #expect(replies.first?["error_code"] == "backend_unavailable", "\(replies)")
        let open = try await waitForHTTP(base + "/readyz", status: 503)
        #expect(open.contains("circuit open"), "\(open)")
        #expect(try await Scrape.take(port: metricsPort).value("llmq_backend_circuit_open") == 1)
        #expect(try await httpGet(base + "/healthz").status == 200)
        #expect(try await runProgram(llmq, ["health", "--port", "1"]).status == 1, "nothing listens on port 1")
    }

    @Test("Neither log format ever shows prompt or completion text; JSON logs are one object per line")
    func logsKeepTextOut() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try await SimProcess(["--slots", "4", "--token-ms", "1", "--fail-first", "1"])
        let secret = "zebra-kumquat-7781"
        var contents: [String] = []
        for format in ["text", "json"] {
            let worker = try WorkerProcess.start(name: "logs-\(format)", environment: workerEnvironment(redis: redis, endpoint: sim.url, [
                "LLMQ_LOG_LEVEL": "trace", "LLMQ_LOG_FORMAT": format, "LLMQ_RETRY_INITIAL_BACKOFF_MS": "10",
                "LLMQ_STREAMS_REPLIES": "llmq:replies-\(format)",
            ]))
            try await publish(client, [("prompt", "tell me about \(secret)"), ("max_tokens", "24")])
            try await publish(client, [("prompt", "\(secret) again"), ("max_tokens", "many")])
            try await publish(client, [("messages", "[{\"role\":\"user\",\"content\":\"\(secret) in messages\"}]")])
            try await publish(client, [("prompt", "\(secret) with a system"), ("system", "\(secret) system")])
            let replies = try await waitForReplies(client, count: 4, stream: "llmq:replies-\(format)")
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit() == 0)
            contents += replies.compactMap { $0["content"] }.filter { $0.count >= 12 }
            let log = worker.output
            #expect(log.contains("worker starting"), "the log was written: \(log.prefix(300))")
            #expect(!log.contains(secret), "\(format) log shows the prompt")
            for content in contents { #expect(!log.contains(content), "\(format) log shows a completion") }
            if format == "json" {
                for line in log.split(separator: "\n") {
                    let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                    #expect(object?["timestamp"] is String && object?["level"] is String && object?["message"] is String, "not a JSON log line: \(line)")
                }
                #expect(log.contains("\"llmq.request.entry\""), "request metadata is kept")
            }
        }
        #expect(contents.count >= 2, "completions to look for: \(contents)")
    }

    @Test("Twenty workers started and stopped (half SIGTERM, half kill -9): the group's consumers return to the live ones; one with pending entries stays")
    func idleConsumersAreRemoved() async throws {
        let (redis, client) = try RedisFixture.current
        // Slots to spare, so that the workers' shared slots do not decide which of them read
        // (each must get entries to join the group and leave a consumer behind).
        let sim = try await SimProcess(["--slots", "64", "--token-ms", "1"])
        // "ghost" crashed holding an entry nobody may claim in this test: it must not be removed.
        try await publish(client, [("prompt", "held")])
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        try await abandonNextEntries(client, count: 1)
        let base = workerEnvironment(redis: redis, endpoint: sim.url, ["LLMQ_RECOVERY_CLAIM_MIN_IDLE_MS": "600000", "LLMQ_LOG_LEVEL": "warning"])
        let keeperPort = try freePort()
        try WorkerProcess.start(name: "keeper", environment: base.merging([
            "LLMQ_RECOVERY_DELETE_IDLE_CONSUMERS_AFTER_SECONDS": "2", "LLMQ_METRICS_PORT": String(keeperPort),
        ]) { $1 })

        func consumers() async throws -> [String: Int] {
            let rows = try await client.send("XINFO", "CONSUMERS", "llmq:requests", "llmq").array ?? []
            var result: [String: Int] = [:]
            for row in rows {
                let info = Dictionary((row.pairs ?? []).map { ($0.name.string ?? "", $0.value) }, uniquingKeysWith: { $1 })
                result[info["name"]?.string ?? "?"] = info["pending"]?.int ?? -1
            }
            return result
        }
        var answered = 0
        var killed = 0
        for batch in 0..<4 {
            let workers = try (0..<5).map { try WorkerProcess.start(name: "churn-\(batch)-\($0)", environment: base) }
            try await Task.sleep(for: .milliseconds(500))
            for index in 0..<10 { try await publish(client, [("prompt", "batch \(batch) job \(index)"), ("max_tokens", "4")]) }
            answered += 10
            _ = try await waitForReplies(client, count: answered)
            // Redis 7 creates a consumer only when it first receives an entry: a worker that got
            // none of the batch never joined, and leaves nothing behind.
            let joined = try await consumers()
            for (index, worker) in workers.enumerated() {
                let signal = (batch * 5 + index) % 2 == 0 ? SIGTERM : SIGKILL
                if signal == SIGKILL, joined[worker.name] != nil { killed += 1 }
                worker.signal(signal)
                _ = await worker.waitForExit()
            }
        }

        let deadline = ContinuousClock.now + .seconds(20)
        var names = try await consumers()
        while Set(names.keys) != ["keeper", "ghost"], ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            names = try await consumers()
        }
        #expect(names == ["keeper": 0, "ghost": 1], "consumers left: \(names.keys.sorted())")
        // The keeper removed the killed ones; the ones stopped with SIGTERM removed themselves.
        #expect(killed >= 5, "enough killed workers had joined the group to judge: \(killed)")
        let deleted = try await Scrape.take(port: keeperPort).value("llmq_consumers_deleted_total")
        #expect(deleted == Double(killed), "deleted by the keeper: \(String(describing: deleted))")
    }
}
