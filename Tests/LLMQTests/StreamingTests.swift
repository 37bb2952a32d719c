import Foundation
import Glibc
import LLMQBackends
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import LLMQSimulator
import LLMQWorker
import Testing

/// A chunk stream read back, and the answer a consumer following the README's rule builds from
/// it: skip a chunk from an older delivery than one already seen, and a text chunk whose `seq`
/// was seen already (a write sent again after a lost connection); append each `delta`, start
/// again at a `reset`, stop at `done`.
struct ReadChunks {
    var chunks: [[String: String]]
    /// Entry IDs' milliseconds (Redis's clock), one per chunk.
    var times: [Int64]

    var text: String {
        var text = ""
        var next = 0
        var delivery = 0
        for chunk in chunks {
            let chunkDelivery = Int(chunk["delivery"] ?? "") ?? 1
            if chunkDelivery < delivery { continue }
            delivery = chunkDelivery
            if chunk["done"] == "1" { break }
            if chunk["reset"] == "1" {
                text = ""
                next = 1
                continue
            }
            guard let seq = Int(chunk["seq"] ?? ""), seq == next else { continue }
            text += chunk["delta"] ?? ""
            next += 1
        }
        return text
    }

    var resets: Int { chunks.filter { $0["reset"] == "1" }.count }
    var done: [String: String]? { chunks.last { $0["done"] == "1" } }
    var textChunks: Int { chunks.filter { $0["delta"] != nil }.count }

    /// Problems with the order: `seq` must count 0, 1, 2... from the start and from each reset
    /// (a chunk may repeat an earlier `seq`: a write sent again), every chunk must carry its
    /// delivery, none may come from an older delivery than one before it, and exactly one
    /// `done`, the last chunk.
    var problems: [String] {
        var problems: [String] = []
        var expected = 0
        var delivery = 0
        for (index, chunk) in chunks.enumerated() {
            guard let chunkDelivery = Int(chunk["delivery"] ?? "") else {
                problems.append("chunk \(index) carries no delivery")
                continue
            }
            if chunkDelivery < delivery { problems.append("chunk \(index) is from delivery \(chunkDelivery) after delivery \(delivery)") }
            delivery = max(delivery, chunkDelivery)
            if chunk["reset"] == "1" { expected = 0 }
            let seq = Int(chunk["seq"] ?? "") ?? -1
            if seq == expected {
                expected += 1
            } else if !(chunk["delta"] != nil && seq >= 0 && seq < expected) {
                problems.append("chunk \(index) has seq \(chunk["seq"] ?? "none"), expected \(expected)")
            }
        }
        let dones = chunks.filter { $0["done"] == "1" }.count
        if dones != 1 { problems.append("\(dones) done chunks") }
        if chunks.last?["done"] != "1" { problems.append("the last chunk is not done") }
        return problems
    }

    static func read(_ client: RedisClient, _ key: String, id: String? = nil) async throws -> ReadChunks {
        let reply = try await client.send("XRANGE", key, "-", "+")
        var result = ReadChunks(chunks: [], times: [])
        for item in reply.array ?? [] {
            var fields: [String: String] = [:]
            for (name, value) in item.array?[1].pairs ?? [] { fields[name.string ?? ""] = value.string ?? "" }
            if let id, fields["id"] != id { continue }
            result.chunks.append(fields)
            result.times.append(StreamEntry(id: item.array?[0].string ?? "", fields: nil).timestampMilliseconds ?? 0)
        }
        return result
    }
}

@Suite("Streaming: chunks as they are generated, honest across retries and takeovers", .serialized, .withRedis)
struct StreamingTests {
    @Test(
        "OpenAI SSE and Ollama NDJSON: chunks arrive during generation, in order, the reply has the same text, the stream expires",
        .withSimulator(.init(slots: 4, tokenMilliseconds: 25, promptMilliseconds: 20)))
    func streamsBothAPIs() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        for (kind, endpoint) in [(BackendConfiguration.Kind.llamaCpp, sim.url), (.ollama, sim.url)] {
            var configuration = workerConfiguration(redis: redis, backend: .init(kind: kind, endpoint: endpoint, model: "sim"))
            configuration.streaming.expire = .seconds(120)
            let worker = try RunningWorker.start(configuration)
            let tokens = 16
            let entry = try await publish(client, [("prompt", "stream me"), ("max_tokens", String(tokens)), ("stream", "true"), ("id", "s-\(kind)")])
            let replies = try await waitForReplies(client, count: kind == .llamaCpp ? 1 : 2)
            let reply = try #require(replies.last)
            let key = "llmq:stream:\(entry)"
            #expect(reply["status"] == "ok", "\(reply)")
            #expect(reply["stream"] == key)
            let chunks = try await ReadChunks.read(client, key)
            #expect(chunks.problems.isEmpty, "\(kind): \(chunks.problems)")
            #expect(chunks.text == reply["content"], "\(kind): streamed text differs from the reply's content")
            #expect(chunks.resets == 0)
            // 25 ms a token against a 10 ms flush interval: text goes out many times, not once at the end.
            #expect(chunks.textChunks >= tokens / 2, "\(kind): only \(chunks.textChunks) text chunks for \(tokens) tokens")
            // The first text was written while the answer was still being generated (16 x 25 ms).
            let firstText = try #require(chunks.chunks.firstIndex { $0["delta"] != nil })
            let doneTime = try #require(chunks.times.last)
            #expect(doneTime - chunks.times[firstText] >= 200, "\(kind): first text only \(doneTime - chunks.times[firstText]) ms before the end")
            let done = try #require(chunks.done)
            #expect(done["id"] == "s-\(kind)")
            #expect(done["status"] == "ok" && done["finish_reason"] == "length" && done["completion_tokens"] == String(tokens))
            #expect(done["generation_ms"] != nil, "\(kind): timings belong in the last chunk")
            #expect(reply["first_token_ms"].flatMap(Double.init).map { $0 > 0 } == true)
            let ttl = try await client.send("PTTL", key).int ?? -2
            #expect(ttl > 100_000 && ttl <= 120_000, "\(kind): TTL \(ttl)")
            await worker.stop()
        }
    }

    @Test(
        "Mid-stream errors: a retry starts with a reset, every answer rebuilds to its reply, exactly one reply each",
        .withSimulator(.init(slots: 8, tokenMilliseconds: 2, faults: SimulatorFaults(midStreamErrorRate: 0.5, seed: 7))),
        arguments: [BackendConfiguration.Kind.llamaCpp, .ollama])
    func midStreamErrors(kind: BackendConfiguration.Kind) async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        var configuration = workerConfiguration(redis: redis, backend: .init(kind: kind, endpoint: sim.url, model: "sim"), concurrency: 8)
        configuration.retry.maxAttempts = 4
        configuration.breaker.failureThreshold = 1000
        try RunningWorker.start(configuration)
        let count = 40
        var keys: [String: String] = [:]
        for index in 0..<count {
            let entry = try await publish(client, [("prompt", "job \(index)"), ("max_tokens", "12"), ("stream", "1"), ("id", "m\(index)")])
            keys["m\(index)"] = "llmq:stream:\(entry)"
        }
        let replies = try await waitForReplies(client, count: count)
        #expect(Set(replies.compactMap { $0["id"] }).count == count)
        var resets = 0
        for reply in replies {
            let id = try #require(reply["id"])
            let chunks = try await ReadChunks.read(client, try #require(keys[id]))
            #expect(chunks.problems.isEmpty, "\(id): \(chunks.problems)")
            let attempts = Int(reply["attempts"] ?? "") ?? 0
            // Every failed attempt wrote text (the error comes a few tokens in), so each retry resets.
            #expect(chunks.resets == attempts - 1, "\(id): \(chunks.resets) resets after \(attempts) attempts")
            resets += chunks.resets
            #expect(chunks.done?["status"] == reply["status"])
            #expect(chunks.done?["attempt"] == reply["attempts"])
            if reply["status"] == "ok" {
                #expect(chunks.text == reply["content"], "\(id): the rebuilt answer differs from the reply")
            } else {
                #expect(reply["error_code"] == "backend_error" && chunks.done?["error_code"] == "backend_error")
            }
        }
        #expect(resets > 5, "the fault rate should have forced retries")
    }

    @Test("kill -9 mid-stream: the consumer that takes the request over starts with a reset; one reply, one done")
    func takeoverAfterKill() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try await SimProcess(["--slots", "8", "--token-ms", "40"])
        let environment = workerEnvironment(redis: redis, endpoint: sim.url, quickTakeover, ["LLMQ_CONCURRENCY": "4", "LLMQ_LOG_LEVEL": "notice"])
        let first = try WorkerProcess.start(name: "stream-victim", environment: environment)
        var keys: [String] = []
        for index in 0..<4 {
            let entry = try await publish(client, [("prompt", "long \(index)"), ("max_tokens", "60"), ("stream", "1"), ("id", "k\(index)")])
            keys.append("llmq:stream:\(entry)")
        }
        // Kill it once every answer has streamed some text (60 tokens x 40 ms: far from done).
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            var streaming = 0
            for key in keys where try await ReadChunks.read(client, key).textChunks >= 3 { streaming += 1 }
            if streaming == keys.count { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        first.signal(SIGKILL)
        _ = await first.waitForExit()
        let second = try WorkerProcess.start(name: "stream-heir", environment: environment)
        let replies = try await waitForReplies(client, count: keys.count, timeout: .seconds(60))
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await readReplies(client).count == keys.count, "exactly one reply each")
        for reply in replies {
            #expect(reply["status"] == "ok", "\(reply)")
            let key = try #require(reply["stream"])
            let chunks = try await ReadChunks.read(client, key)
            #expect(chunks.problems.isEmpty, "\(key): \(chunks.problems)")
            #expect(chunks.resets == 1, "\(key): the takeover must say the earlier text is void")
            let reset = try #require(chunks.chunks.first { $0["reset"] == "1" })
            #expect(reset["delivery"] == "2")
            #expect(chunks.text == reply["content"], "\(key): the rebuilt answer differs from the reply")
            // The void text came before the reset: the stream really was cut mid-answer.
            let resetIndex = try #require(chunks.chunks.firstIndex { $0["reset"] == "1" })
            #expect(chunks.chunks[..<resetIndex].contains { $0["delta"] != nil })
        }
        second.signal(SIGTERM)
        #expect(await second.waitForExit() == 0)
    }

    @Test("A shared stream_to: chunks carry each request's id, every answer rebuilds from its own", .withSimulator(.init(slots: 8, tokenMilliseconds: 3)))
    func sharedStream() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim, concurrency: 8))
        try await publish(client, count: 10, prompt: "shared ", maxTokens: 10, [("stream_to", "llmq:chat:session-1")], ids: "sh")
        let replies = try await waitForReplies(client, count: 10)
        for reply in replies {
            let id = try #require(reply["id"])
            #expect(reply["stream"] == "llmq:chat:session-1")
            let chunks = try await ReadChunks.read(client, "llmq:chat:session-1", id: id)
            #expect(chunks.problems.isEmpty, "\(id): \(chunks.problems)")
            #expect(chunks.text == reply["content"])
        }
    }

    @Test(
        "Bad stream fields get invalid_request, and its error as the last chunk where the stream could be read",
        arguments: [
            ([("stream", "maybe")], "stream must be true or false", false),
            ([("stream", "")], "stream must be true or false", false),
            ([("stream", "2")], "stream must be true or false", false),
            ([("stream", String(repeating: "1", count: 100))], "stream must be true or false", false),
            ([("stream", "0"), ("stream_to", "llmq:mine")], "stream is false", false),
            ([("stream_to", "elsewhere:x")], "must start with", false),
            ([("stream_to", "")], "1 to 512 bytes", false),
            ([("stream_to", "llmq:" + String(repeating: "x", count: 600))], "1 to 512 bytes", false),
            ([("stream_to", "llmq:replies")], "reply stream", false),
            ([("stream_to", "llmq:requests")], "llmq's own streams", false),
            ([("stream_to", "llmq:r"), ("reply_to", "llmq:r")], "reply stream", false),
            ([("stream", " TRUE "), ("temperature", "9")], "temperature 9", true),
            ([("stream_to", "llmq:mine"), ("max_tokens", "-1")], "max_tokens -1", true),
        ] as [([(String, String)], String, Bool)])
    func badStreamFields(fields: [(String, String)], message: String, errorChunk: Bool) async throws {
        let (redis, client) = try RedisFixture.current
        try RunningWorker.start(workerConfiguration(redis: redis, backend: .init(kind: .llamaCpp, endpoint: "http://127.0.0.1:9")))
        let entry = try await publish(client, [("prompt", "hi"), ("id", "bad")] + fields)
        let replyStream = fields.first { $0.0 == "reply_to" }?.1 ?? "llmq:replies"
        let reply = try #require(try await waitForReplies(client, count: 1, stream: replyStream).first)
        #expect(reply["status"] == "error" && reply["error_code"] == "invalid_request", "\(reply)")
        #expect(reply["error"]?.contains(message) == true, "\(reply["error"] ?? "")")
        let key = fields.first { $0.0 == "stream_to" }?.1 ?? "llmq:stream:\(entry)"
        let chunks = try await ReadChunks.read(client, key)
        if errorChunk {
            #expect(reply["stream"] == key)
            #expect(chunks.chunks.count == 1 && chunks.done?["error_code"] == "invalid_request" && chunks.done?["error"] == reply["error"])
        } else {
            #expect(reply["stream"] == nil)
            #expect(!chunks.chunks.contains { $0["seq"] != nil }, "no chunk may be written: \(chunks.chunks)")
        }
    }

    @Test("A chunk stream key that holds something else: the reply says so, and comes anyway", .withSimulator(.init(slots: 2, tokenMilliseconds: 1)))
    func wrongTypeStream() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        _ = try await client.send("SET", "llmq:taken", "a string")
        try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))
        try await publish(client, [("prompt", "hi"), ("max_tokens", "4"), ("stream_to", "llmq:taken")])
        let reply = try #require(try await waitForReplies(client, count: 1).first)
        #expect(reply["status"] == "ok")
        #expect(reply["stream_error"]?.contains("llmq:taken") == true, "\(reply)")
        #expect(try await client.send("GET", "llmq:taken").string == "a string")
    }

    @Test("A streamed request dead-lettered while the dead-letter key is not a stream: the last chunk is still the right one")
    func deadLetterWithBrokenDeadStream() async throws {
        let (redis, client) = try RedisFixture.current
        _ = try await client.send("SET", "llmq:dead", "not a stream")
        _ = try await client.send("XGROUP", "CREATE", "llmq:requests", "llmq", "0", "MKSTREAM")
        let entry = try await publish(client, [("prompt", "hi"), ("stream", "1"), ("id", "doomed")])
        try await abandonNextEntries(client, deliveries: 9)
        var configuration = workerConfiguration(redis: redis, backend: .init(kind: .llamaCpp, endpoint: "http://127.0.0.1:9"))
        configuration.claimIdle(after: .milliseconds(100), every: .milliseconds(50))
        try RunningWorker.start(configuration)
        let reply = try #require(try await waitForReplies(client, count: 1).first)
        #expect(reply["error_code"] == "dead_letter" && reply["dead_letter_error"] != nil, "\(reply)")
        let chunks = try await ReadChunks.read(client, "llmq:stream:\(entry)")
        #expect(chunks.problems.isEmpty, "\(chunks.problems)")
        let done = try #require(chunks.done)
        #expect(done["id"] == "doomed" && done["status"] == "error" && done["error_code"] == "dead_letter", "\(done)")
        #expect(done["consumer"] == nil && done["delivery"] == "10", "only the last chunk's own fields: \(done)")
    }

    @Test("llmq publish --stream prints the text as it comes, then the timings", .withSimulator(.init(slots: 2, tokenMilliseconds: 5)))
    func publishCommand() async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))
        let result = try runLLMQ(
            ["publish", "--prompt", "hello", "--max-tokens", "8", "--stream", "--timeout", "20"], environment: ["LLMQ_REDIS_URL": redis.url])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first?.contains("-") == true, "the entry ID comes first: \(result.stdout)")
        let reply = try #require(try await waitForReplies(client, count: 1).first)
        #expect(lines.count > 2 && lines[1] == reply["content"], "\(result.stdout)")
        #expect(result.stdout.contains("first text here after:") && result.stdout.contains("finish_reason: length"))
    }
}

