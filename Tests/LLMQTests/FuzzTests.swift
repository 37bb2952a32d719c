import Foundation
import Glibc
import LLMQBackends
import LLMQRedis
import LLMQSimulator
import Testing

/// Seeded, reproducible fuzzing of what crosses llmq's sockets: stream entries from producers,
/// and answers from backends. Each test prints its seed; `LLMQ_FUZZ_SEED=N make test` replays
/// a run. Done means every worker process is alive at the end and every entry has exactly one
/// reply.
@Suite("Fuzz: stream entries and backend answers", .serialized, .withRedis)
struct FuzzTests {
    // MARK: - Stream entries

    @Test("10,000 fuzzed stream entries (explicit IDs up to 2^64-1, up to 2,000 fields, edge numbers): one reply each, workers alive", .withSimulator(.init(slots: 64, tokenMilliseconds: 0)))
    func streamEntries() async throws {
        let seed = fuzzSeed(20_261_125, test: "streamEntries")
        var random = SeededGenerator(seed: seed)
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        _ = try await client.send("SET", "llmq:str", "a string, not a stream")
        let environment = workerEnvironment(redis: redis, endpoint: sim.url, [
            "LLMQ_CONCURRENCY": "16", "LLMQ_READ_BLOCK_MS": "100", "LLMQ_LOG_LEVEL": "error", "LLMQ_SHUTDOWN_GRACE_SECONDS": "10",
        ])
        let workers = try (1...2).map { try WorkerProcess.start(name: "fuzz-entries-\($0)", environment: environment) }

        let ids = try await publishFuzzedEntries(count: 10_000, client: client, random: &random)
        #expect(ids.count > 9_000, "most fuzzed XADDs should be accepted")
        let replies = try await collectReplies(client, expected: ids.count, streams: ["llmq:replies", "llmq:other", "llmq:"], timeout: .seconds(240))

        for worker in workers {
            #expect(worker.isRunning, "\(worker.name) died (seed \(seed)): \(worker.output.suffix(1500))")
        }
        print("streamEntries: \(ids.count) entries accepted; replies by outcome: \(outcomes(replies))")
        expectOneReplyEach(replies, ids: ids, seed: seed)
        #expect(replies.allSatisfy { $0["status"] == "ok" || $0["error_code"].map(Self.entryErrorCodes.contains) == true },
                "unexpected error codes: \(Set(replies.compactMap { $0["error_code"] }))")
        #expect(try await client.send("XLEN", "llmq:requests").int == 0, "answered entries are deleted")
        #expect(try await client.send("XPENDING", "llmq:requests", "llmq").array?.first?.int == 0)
        for worker in workers {
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit() == 0)
        }
    }

    static let entryErrorCodes: Set<String> = ["invalid_request", "expired", "backend_rejected", "backend_bad_response"]

    /// Publishes `count` entries with `XADD`, in increasing explicit IDs from `0-1` to
    /// `18446744073709551615-18446744073709551615` mixed with auto IDs; returns the IDs Redis
    /// accepted.
    private func publishFuzzedEntries(count: Int, client: RedisClient, random: inout SeededGenerator) async throws -> [String] {
        let ids = fuzzedIDs(count: count, random: &random)
        var accepted: [String] = []
        var batch: [RedisCommand] = []
        var batchBytes = 0
        func flush() async throws {
            for reply in try await client.pipeline(batch) {
                if let id = reply.string { accepted.append(id) }
            }
            batch.removeAll()
            batchBytes = 0
        }
        for id in ids {
            var command = RedisCommand("XADD", "llmq:requests", id)
            for (name, value) in fuzzedFields(random: &random) {
                command.append(bytes: name)
                command.append(bytes: value)
                batchBytes += name.count + value.count
            }
            batch.append(command)
            if batch.count >= 200 || batchBytes > 8 << 20 { try await flush() }
        }
        try await flush()
        return accepted
    }

    /// IDs in increasing order: explicit ones below the current time, auto IDs (`*`), explicit
    /// ones far in the future up to the largest ID a stream can hold, which comes last (no
    /// entry can follow it).
    private func fuzzedIDs(count: Int, random: inout SeededGenerator) -> [String] {
        let seqEdges: [UInt64] = [0, 1, 2, 1 << 31, UInt64(Int64.max), UInt64(Int64.max) + 1, UInt64.max - 1, UInt64.max]
        let lowMilliseconds: [UInt64] = [0, 1, 2, 999, 1 << 31, (1 << 32) - 1, 1 << 32, 1_000_000_000_000]
        let highMilliseconds: [UInt64] = [
            4_000_000_000_000, 1 << 53, (1 << 53) + 1, UInt64(Int64.max) - 1000, 9_223_372_036_854_775_000,
            UInt64(Int64.max) - 1, UInt64(Int64.max), UInt64(Int64.max) + 1, UInt64.max - 1, UInt64.max,
        ]
        func explicit(_ milliseconds: [UInt64]) -> [String] {
            var pairs: [(UInt64, UInt64)] = []
            for ms in milliseconds {
                for seq in seqEdges { pairs.append((ms, seq)) }
                for _ in 0..<40 { pairs.append((ms, UInt64.random(in: 3...(1 << 40), using: &random))) }
            }
            for _ in 0..<200 {
                let ms = UInt64.random(in: milliseconds.first!...milliseconds.last!, using: &random)
                pairs.append((ms, UInt64.random(in: 0...UInt64.max, using: &random)))
            }
            pairs.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            return pairs.filter { $0 != (0, 0) }.map { "\($0.0)-\($0.1)" }
        }
        let low = explicit(lowMilliseconds)
        var high = explicit(highMilliseconds)
        high.removeLast()  // the maximum ID, appended at the very end
        // After an explicit ID, `*` gives IDs that share its millisecond part: mix them in.
        var highPart: [String] = []
        for (index, id) in high.enumerated() {
            highPart.append(id)
            if index < high.count - 1 && Bool.random(using: &random) { highPart.append("*") }
        }
        let autos = max(0, count - 1 - low.count - highPart.count)
        var ids = low + Array(repeating: "*", count: autos) + highPart
        ids = Array(ids.prefix(count - 1))
        ids.append("18446744073709551615-18446744073709551615")
        return ids
    }

    private static let knownNames = [
        "prompt", "messages", "system", "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "id",
        "reply_to", "ttl_ms", "deadline_ms",
    ]
    private static let numberEdges = [
        "0", "-0", "1", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
        "18446744073709551615", "18446744073709551616", "4294967295", "4294967296", "2147483647", "-2147483648",
        "1.7976931348623157e308", "-1.7976931348623157e308", "1.8e308", "4.9e-324", "2.2250738585072014e-308", "1e-400",
        "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "0x10", "0b1", "1_000", " 5 ", "5\u{0}", "+5", "1.0",
        "1e3", ".5", "5.", "", " ", "١٢", "9".padding(toLength: 400, withPad: "9", startingAt: 0),
    ]
    private static let replyTargets = ["llmq:replies", "llmq:other", "llmq:str", "llmq:requests", "llmq:dead", "elsewhere", "llmq:", ""]

    private func fuzzedFields(random: inout SeededGenerator) -> [([UInt8], [UInt8])] {
        var fields: [([UInt8], [UInt8])] = []
        if Double.random(in: 0..<1, using: &random) < 0.3 {
            // A valid request that fuzzed fields may spoil or leave alone.
            fields.append((Array("prompt".utf8), Array("hello".utf8)))
            fields.append((Array("max_tokens".utf8), Array("2".utf8)))
        }
        let roll = Double.random(in: 0..<1, using: &random)
        let count = roll < 0.9 ? Int.random(in: 1...8, using: &random)
            : roll < 0.995 ? Int.random(in: 9...100, using: &random) : Int.random(in: 101...2000, using: &random)
        for _ in 0..<count {
            fields.append((fuzzedName(random: &random), fuzzedValue(random: &random)))
        }
        return fields
    }

    private func fuzzedName(random: inout SeededGenerator) -> [UInt8] {
        switch Int.random(in: 0..<10, using: &random) {
        case 0..<7: return Array(Self.knownNames.randomElement(using: &random)!.utf8)
        case 7: return []
        case 8: return randomBytes(Int.random(in: 1...40, using: &random), random: &random)
        default: return Array("x-\(Int.random(in: 0..<50, using: &random))".utf8)
        }
    }

    private func fuzzedValue(random: inout SeededGenerator) -> [UInt8] {
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<35: return Array(Self.numberEdges.randomElement(using: &random)!.utf8)
        case 35..<45: return Array(Self.replyTargets.randomElement(using: &random)!.utf8)
        case 45..<55: return randomBytes(Int.random(in: 0...200, using: &random), random: &random)
        case 55..<60: return [0xFF, 0xFE, 0xC3, 0x28, 0xED, 0xA0, 0x80, 0xF4, 0x90, 0x80, 0x80]  // invalid UTF-8
        case 60..<70:
            let samples = [
                #"[{"role":"user","content":"hi"}]"#, #"[{"role":"user","content":"\ud800"}]"#, #"[{"role":"user"}]"#,
                #"[{"role":"wizard","content":"x"}]"#, "[]", "{}", "null", #"["a","b"]"#, "[1e999]", #"[{"role":"user","content":"x"}"#,
                String(repeating: "[", count: 5000), #"["stop"]"#, #"[{"role":"system","content":""},{"role":"assistant","content":"a"}]"#,
            ]
            return Array(samples.randomElement(using: &random)!.utf8)
        case 70..<72:
            // Large, sometimes over limits.maxRequestBytes (1 MiB by default).
            let size = [1_000_000, 1_048_576, 1_100_000, 300_000].randomElement(using: &random)!
            return Array(repeating: UInt8(ascii: "a"), count: size)
        case 72..<80: return Array(String(repeating: "word ", count: Int.random(in: 1...400, using: &random)).utf8)
        default: return Array("hello".utf8)
        }
    }

    // MARK: - Backend answers

    @Test("2,000 fuzzed backend answers (every status, hostile headers, broken bodies, stalls): one reply each, workers alive")
    func backendAnswers() async throws {
        let seed = fuzzSeed(1_125_2026, test: "backendAnswers")
        let server = try ScriptedHTTPServer { index, _ in
            var random = SeededGenerator(seed: seed &+ UInt64(index) &* 0x9E37_79B9)
            return Self.fuzzedAnswer(random: &random)
        }
        defer { server.stop() }
        let (redis, client) = try RedisFixture.current
        let common = [
            "LLMQ_BACKEND_MODEL": "m", "LLMQ_BACKEND_TIMEOUT_SECONDS": "1", "LLMQ_BACKEND_CONNECT_TIMEOUT_SECONDS": "1",
            "LLMQ_CONCURRENCY": "16", "LLMQ_RETRY_MAX_ATTEMPTS": "2", "LLMQ_RETRY_INITIAL_BACKOFF_MS": "1", "LLMQ_RETRY_MAX_BACKOFF_MS": "20",
            "LLMQ_BREAKER_FAILURE_THRESHOLD": "10000", "LLMQ_READ_BLOCK_MS": "100", "LLMQ_LOG_LEVEL": "error",
        ]
        // One worker per API: OpenAI-compatible JSON and Ollama's NDJSON.
        let workers = try ["llama-cpp", "ollama"].map { type in
            try WorkerProcess.start(
                name: "fuzz-backend-\(type)", environment: workerEnvironment(redis: redis, endpoint: server.url, common, ["LLMQ_BACKEND_TYPE": type]))
        }
        var published: [String] = []
        var replies: [[String: String]] = []
        let started = ContinuousClock.now
        while server.requests < 2000 && ContinuousClock.now - started < .seconds(240) {
            var commands: [RedisCommand] = []
            for _ in 0..<100 {
                commands.append(RedisCommand("XADD", "llmq:requests", "*", "prompt", "fuzz", "max_tokens", "4"))
            }
            published += try await client.pipeline(commands).compactMap(\.string)
            replies = try await collectReplies(client, expected: published.count, streams: ["llmq:replies"], timeout: .seconds(60))
        }
        print("backendAnswers: \(server.requests) answers for \(published.count) requests in \(ContinuousClock.now - started); replies by outcome: \(outcomes(replies))")
        #expect(server.requests >= 2000)
        for worker in workers {
            #expect(worker.isRunning, "\(worker.name) died (seed \(seed)): \(worker.output.suffix(1500))")
        }
        expectOneReplyEach(replies, ids: published, seed: seed)
        let codes = Set(replies.compactMap { $0["error_code"] })
        #expect(codes.isSubset(of: Self.backendErrorCodes), "unexpected error codes: \(codes)")
        #expect(replies.contains { $0["status"] == "ok" }, "some fuzzed answers are valid completions")
        #expect(try await client.send("XPENDING", "llmq:requests", "llmq").array?.first?.int == 0)
        for worker in workers {
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit() == 0)
        }
    }

    @Test("every HTTP status from 100 to 599, with and without a body, through both APIs: an answer or a classified error")
    func everyStatus() async throws {
        let server = try ScriptedHTTPServer { index, _ in
            let status = 100 + index % 500
            let body = index / 500 % 2 == 0 ? Array(#"{"error":{"message":"status test","type":"x"}}"#.utf8) : []
            return .respond(httpResponse(status: status, headers: [("Retry-After", "0")], body: body))
        }
        defer { server.stop() }
        for kind in [BackendConfiguration.Kind.llamaCpp, .ollama] {
            var configuration = BackendConfiguration(kind: kind, endpoint: server.url)
            configuration.model = "m"
            configuration.requestTimeout = .seconds(2)
            let backend = try makeChatBackend(configuration, maxConcurrentRequests: 16)
            defer { backend.shutdown() }
            var outcomes: [String: Int] = [:]
            for _ in 0..<1000 {
                do {
                    _ = try await backend.complete(ChatRequest(messages: [ChatMessage(role: .user, content: "hi")], maxTokens: 2))
                    outcomes["ok", default: 0] += 1
                } catch {
                    outcomes[error.code.rawValue, default: 0] += 1
                }
            }
            print("everyStatus \(kind.rawValue): \(outcomes.sorted { $0.key < $1.key })")
            #expect(outcomes.values.reduce(0, +) == 1000)
            #expect(Set(outcomes.keys).isSubset(of: Self.backendErrorCodes), "200 with an error body is no completion")
        }
    }

    static let backendErrorCodes: Set<String> = [
        "backend_unavailable", "backend_timeout", "backend_busy", "backend_error", "backend_bad_response",
        "backend_rejected", "context_exceeded", "model_not_found",
    ]

    static func fuzzedAnswer(random: inout SeededGenerator) -> ScriptedHTTPServer.Action {
        let json = [("Content-Type", "application/json")]
        let completion = Array(#"{"model":"m","choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1},"timings":{"prompt_ms":1.5,"predicted_ms":2.5,"predicted_per_second":400}}"#.utf8)
        let ndjson = Array(("{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"o\"},\"done\":false}\n"
            + "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"k\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":3,\"eval_count\":2,\"eval_duration\":1000000}\n").utf8)
        let hostileNumbers = ["1e300", "nan", "-1", "inf", "99999999999999999999999", "", "0x7fffffffffffffff", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", String(repeating: "9", count: 3000)]
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<20:
            return .respond(httpResponse(status: 200, headers: json, body: completion))
        case 20..<25:
            return .respond(httpResponse(status: 200, headers: [("Content-Type", "application/x-ndjson")], body: ndjson))
        case 25..<40:
            let status = Int.random(in: 100...599, using: &random)
            let bodies = [#"{"error":{"message":"nope","type":"server_error"}}"#, #"{"error":"model \"m\" not found"}"#, "", "<html>oops</html>",
                          #"{"error":{"message":"exceeds the available context size","type":"exceed_context_size_error"}}"#]
            return .respond(httpResponse(status: status, headers: json, body: Array(bodies.randomElement(using: &random)!.utf8)))
        case 40..<50:
            let status = Bool.random(using: &random) ? 503 : 429
            return .respond(httpResponse(status: status, headers: [("Retry-After", hostileNumbers.randomElement(using: &random)!)], body: Array("busy".utf8)))
        case 50..<60:
            let lengths = ["-1", "abc", "99999999999999999999", String(completion.count + 500), String(completion.count / 2), "18446744073709551616", "1e3"]
            var headers = json + [("Content-Length", lengths.randomElement(using: &random)!)]
            if Bool.random(using: &random) { headers.append(("Content-Length", String(completion.count))) }
            return .respond(httpResponse(status: 200, headers: headers, body: completion))
        case 60..<72:
            let bodies: [[UInt8]] = [
                Array(completion.prefix(Int.random(in: 0..<completion.count, using: &random))),
                Array("{not json".utf8), Array(#"{"choices": 5}"#.utf8), Array("[]".utf8), Array("null".utf8),
                Array(#"{"choices":[]}"#.utf8), Array(#"{"choices":[{"message":{"content":42}}]}"#.utf8),
                Array(#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1e300,"completion_tokens":-5}}"#.utf8),
                Array(#"{"choices":[{"message":{"content":"x"}}],"usage":{"completion_tokens":9223372036854775808}}"#.utf8),
                Array(#"{"choices":[{"message":{"content":"x"}}],"timings":{"prompt_ms":1e999,"predicted_ms":-1e308,"predicted_per_second":1e308}}"#.utf8),
                Array(#"{"choices":[{"message":{"content":"\ud800\udfff\ud800"}}]}"#.utf8),
                Array(#"{"done":true,"eval_count":1e300,"eval_duration":0}"#.utf8),
                Array(#"{"done":true,"eval_count":5,"eval_duration":-1}"#.utf8),
                Array(#"{"error":"boom"}"#.utf8),
            ]
            return .respond(httpResponse(status: 200, headers: json, body: bodies.randomElement(using: &random)!))
        case 72..<78:
            // Invalid UTF-8 inside the content string.
            var body = Array(#"{"choices":[{"message":{"content":"a"#.utf8)
            body += [0xFF, 0xC3, 0x28, 0xED, 0xA0, 0x80]
            body += Array(#""},"finish_reason":"stop"}]}"#.utf8)
            return .respond(httpResponse(status: 200, headers: json, body: body))
        case 78..<84:
            let garbage = ["zz\r\nabc\r\n0\r\n\r\n", "-5\r\nabc\r\n", "ffffffffffffffff\r\nabc", "3\r\nabcdef\r\n0\r\n\r\n", "\r\n\r\n", "5;x=" + String(repeating: "y", count: 10_000) + "\r\nabcde\r\n0\r\n\r\n"]
            return .respond(httpResponse(status: 200, headers: json + [("Transfer-Encoding", "chunked")], body: Array(garbage.randomElement(using: &random)!.utf8)))
        case 84..<88:
            return .stall(Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"choices\":".utf8), limit: .seconds(3))
        case 88..<90:
            let head = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            let chunk = Array("4000\r\n".utf8) + Array(repeating: UInt8(ascii: "a"), count: 0x4000) + Array("\r\n".utf8)
            return .endless(head: head, chunk: chunk, limit: .seconds(3))
        case 90..<94:
            return .close
        case 94..<96:
            var head = "HTTP/1.1 200 OK\r\n"
            for index in 0..<2000 { head += "X-Flood-\(index): \(String(repeating: "v", count: 60))\r\n" }
            return .respond(Array((head + "Content-Length: 2\r\n\r\n{}").utf8))
        default:
            let lines = ["HTTP/1.1 999 What\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 abc\r\n\r\n", "garbage\r\n\r\n", "HTTP/9.9 200 OK\r\n\r\n",
                         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + String(repeating: "x", count: 70_000) + "\r\n\r\n{}"]
            return .respond(Array(lines.randomElement(using: &random)!.utf8))
        }
    }
}

// MARK: - Helpers

/// "ok" or the error code, with counts, most frequent first.
private func outcomes(_ replies: [[String: String]]) -> String {
    let counts = Dictionary(grouping: replies, by: { $0["error_code"] ?? $0["status"] ?? "?" }).mapValues(\.count)
    return counts.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
}

private func randomBytes(_ count: Int, random: inout SeededGenerator) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
}

/// Reads the reply streams until `expected` replies are there (or `timeout`), then a moment
/// longer, so that a duplicate would show.
private func collectReplies(_ client: RedisClient, expected: Int, streams: [String], timeout: Duration) async throws -> [[String: String]] {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        var total = 0
        for stream in streams { total += try await client.send("XLEN", stream).int ?? 0 }
        if total >= expected { break }
        try await Task.sleep(for: .milliseconds(100))
    }
    try await Task.sleep(for: .milliseconds(300))
    var replies: [[String: String]] = []
    for stream in streams { replies += try await readReplies(client, stream: stream) }
    return replies
}

private func expectOneReplyEach(_ replies: [[String: String]], ids: [String], seed: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
    let byRequest = Dictionary(grouping: replies, by: { $0["request"] ?? "" })
    let missing = Set(ids).subtracting(byRequest.keys).sorted()
    let duplicated = byRequest.filter { $0.value.count > 1 }.keys.sorted()
    let unknown = Set(byRequest.keys).subtracting(ids).sorted()
    #expect(missing.isEmpty, "seed \(seed): \(missing.count) entries never answered, e.g. \(missing.prefix(5))", sourceLocation: sourceLocation)
    #expect(duplicated.isEmpty, "seed \(seed): answered more than once: \(duplicated.prefix(5))", sourceLocation: sourceLocation)
    #expect(unknown.isEmpty, "seed \(seed): replies for entries never published: \(unknown.prefix(5))", sourceLocation: sourceLocation)
}
