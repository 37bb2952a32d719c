import Foundation
import LLMQBackends
import LLMQRedis
import LLMQWorker
import NIOConcurrencyHelpers

/// `llmq bench --stream`: streamed requests kept at a fixed concurrency (a new one is published
/// as each is answered), measuring the time to first token as a producer sees it: from just
/// before its `XADD` to the arrival of the first text chunk. With `--direct`, the same requests
/// go straight to the backend as streaming HTTP calls instead, for the comparison.
struct StreamBench: Sendable {
    var requests: Int
    var concurrency: Int
    var prompt: String
    var maxTokens: Int
    var timeout: Duration

    /// Results of one run, in milliseconds.
    struct Report: Encodable {
        var mode: String
        var requests: Int
        var answered: Int
        var errors: Int
        var concurrency: Int
        var firstTokenMilliseconds: BenchReport.Percentiles
        var totalMilliseconds: BenchReport.Percentiles
        var seconds: Double
        /// Text chunks per answered request (through llmq).
        var chunksPerRequest: Double?
        /// Through llmq: the replies' `queue_ms` (publish to claim) and `first_token_ms` (the
        /// worker's call to its first text), the parts of the first token's time that are not
        /// the chunk's way to the producer.
        var queueMilliseconds: BenchReport.Percentiles?
        var backendFirstTokenMilliseconds: BenchReport.Percentiles?
        /// Redis commands per request by command (`INFO commandstats` before and after), the
        /// producer's own included; through llmq only.
        var redisCommandsPerRequest: [String: Double]?

        var text: String {
            func row(_ name: String, _ p: BenchReport.Percentiles) -> String {
                name.padding(toLength: 12, withPad: " ", startingAt: 0)
                    + [p.p50, p.p90, p.p99, p.max].map { String(format: "%12.3f", $0) }.joined()
            }
            var lines = [
                "\(mode): \(answered)/\(requests) answered, \(errors) errors, \(concurrency) concurrent streams, \(String(format: "%.1f", seconds)) s",
                "ms                 p50         p90         p99         max",
                row("first token", firstTokenMilliseconds),
                row("total", totalMilliseconds),
            ]
            if let queue = queueMilliseconds { lines.append(row("queue_ms", queue)) }
            if let backend = backendFirstTokenMilliseconds { lines.append(row("backend 1st", backend)) }
            if let chunksPerRequest { lines.append(String(format: "text chunks per request: %.1f", chunksPerRequest)) }
            if let commands = redisCommandsPerRequest {
                let total = commands.values.reduce(0, +)
                let detail = commands.sorted { $0.value > $1.value }.map { "\($0.key) \(String(format: "%.1f", $0.value))" }
                lines.append(String(format: "Redis commands per request: %.1f (", total) + detail.joined(separator: ", ") + ")")
            }
            return lines.joined(separator: "\n")
        }
    }

    /// Through llmq: requests with `stream_to` one chunk stream of the run's, replies to the run's stream.
    /// - Parameter prefix: The queue's `reply_to` prefix, which the run's streams start with.
    func throughQueue(client: RedisClient, reader: RedisClient, requestStream: String, prefix: String, run: String) async throws(RedisError) -> Report {
        let chunkStream = "\(prefix)bench:\(run):chunks"
        let replyStream = "\(prefix)bench:\(run)"
        let before = try await commandStats(client)
        var published: [String: ContinuousClock.Instant] = [:]
        var firstToken: [String: Duration] = [:]
        var total: [Double] = []
        var queueWaits: [Double] = []
        var backendFirstTokens: [Double] = []
        var chunks = 0
        var errors = 0
        var next = 0
        var outstanding = 0
        var cursors = ("0-0", "0-0")
        let start = ContinuousClock.now
        let deadline = start + timeout
        while (next < requests || outstanding > 0) && ContinuousClock.now < deadline {
            var commands: [RedisCommand] = []
            var ids: [String] = []
            while outstanding + commands.count < concurrency && next < requests {
                let id = "stream-\(next)"
                commands.append(RedisCommand(
                    "XADD", requestStream, "*", "prompt", prompt, "max_tokens", String(maxTokens), "id", id,
                    "reply_to", replyStream, "stream_to", chunkStream))
                ids.append(id)
                next += 1
            }
            if !commands.isEmpty {
                let now = ContinuousClock.now
                for id in ids { published[id] = now }
                for reply in try await client.pipeline(commands) {
                    if let message = reply.errorMessage { throw RedisError(.server, message) }
                }
                outstanding += commands.count
            }
            let read = try await reader.send(RedisCommand(
                "XREAD", "COUNT", "10000", "BLOCK", "1000", "STREAMS", chunkStream, replyStream, cursors.0, cursors.1))
            let arrived = ContinuousClock.now
            for (name, entries) in try StreamsReply(decoding: read).streams {
                for entry in entries {
                    let fields = entry.textFields
                    if name == chunkStream {
                        // Only `id` and whether it is text matter here; a chunk is not worth a dictionary.
                        cursors.0 = entry.id
                        guard fields.contains(where: { $0.name == "delta" }),
                            let id = fields.first(where: { $0.name == "id" })?.value, let sent = published[id]
                        else { continue }
                        chunks += 1
                        if firstToken[id] == nil { firstToken[id] = arrived - sent }
                        continue
                    }
                    cursors.1 = entry.id
                    let reply = Dictionary(fields.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
                    guard let id = reply["id"], let sent = published[id] else { continue }
                    outstanding -= 1
                    if reply["status"] == "ok" {
                        total.append((arrived - sent).fractionalMilliseconds)
                        if let queue = reply["queue_ms"].flatMap(Double.init) { queueWaits.append(queue) }
                        if let first = reply["first_token_ms"].flatMap(Double.init) { backendFirstTokens.append(first) }
                    } else {
                        errors += 1
                    }
                }
            }
        }
        let seconds = (ContinuousClock.now - start).fractionalMilliseconds / 1000
        let after = try await commandStats(client)
        let answered = total.count
        return Report(
            mode: "through llmq", requests: requests, answered: answered, errors: errors, concurrency: concurrency,
            firstTokenMilliseconds: BenchReport.Percentiles(firstToken.values.map(\.fractionalMilliseconds)),
            totalMilliseconds: BenchReport.Percentiles(total), seconds: seconds,
            chunksPerRequest: Double(chunks) / Double(max(1, answered)),
            queueMilliseconds: BenchReport.Percentiles(queueWaits), backendFirstTokenMilliseconds: BenchReport.Percentiles(backendFirstTokens),
            redisCommandsPerRequest: Self.callsPerRequest(before: before, after: after, requests: answered + errors))
    }

    /// Each command's calls between two `INFO commandstats` readings, per request.
    private static func callsPerRequest(before: [String: Int], after: [String: Int], requests: Int) -> [String: Double] {
        var perRequest: [String: Double] = [:]
        for (command, calls) in after {
            let delta = calls - (before[command] ?? 0)
            // INFO itself, run here twice, is not the run's.
            if delta > 0 && command != "info" { perRequest[command] = Double(delta) / Double(max(1, requests)) }
        }
        return perRequest
    }

    /// Straight to the backend: `concurrency` clients, each streaming one request after another.
    func direct(backend: any ChatBackend) async -> Report {
        let request = ChatRequest(messages: [ChatMessage(role: .user, content: prompt)], maxTokens: maxTokens)
        let start = ContinuousClock.now
        let deadline = start + timeout
        // Client i sends requests i, i + concurrency, ...: one after another, like a chat user.
        let (firstToken, total, errors) = await withTaskGroup(of: ([Double], [Double], Int).self) { group in
            for client in 0..<concurrency {
                group.addTask { [requests, concurrency] in
                    var firstToken: [Double] = []
                    var total: [Double] = []
                    var errors = 0
                    for _ in stride(from: client, to: requests, by: concurrency) where ContinuousClock.now < deadline {
                        let sent = ContinuousClock.now
                        let first = NIOLockedValueBox<Duration?>(nil)
                        do {
                            _ = try await backend.complete(request) { _ in
                                first.withLockedValue { if $0 == nil { $0 = ContinuousClock.now - sent } }
                            }
                            total.append((ContinuousClock.now - sent).fractionalMilliseconds)
                            if let first = first.withLockedValue({ $0 }) { firstToken.append(first.fractionalMilliseconds) }
                        } catch {
                            errors += 1
                        }
                    }
                    return (firstToken, total, errors)
                }
            }
            var all: ([Double], [Double], Int) = ([], [], 0)
            for await part in group {
                all.0 += part.0
                all.1 += part.1
                all.2 += part.2
            }
            return all
        }
        let seconds = (ContinuousClock.now - start).fractionalMilliseconds / 1000
        return Report(
            mode: "direct to the backend", requests: requests, answered: total.count, errors: errors, concurrency: concurrency,
            firstTokenMilliseconds: BenchReport.Percentiles(firstToken), totalMilliseconds: BenchReport.Percentiles(total),
            seconds: seconds)
    }

    /// Calls per command from `INFO commandstats` (`cmdstat_xadd:calls=12,...`).
    private func commandStats(_ client: RedisClient) async throws(RedisError) -> [String: Int] {
        let info = try await client.send("INFO", "commandstats").string ?? ""
        var calls: [String: Int] = [:]
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[line.index(line.startIndex, offsetBy: 8)..<colon])
            let stats = line[line.index(after: colon)...].split(separator: ",")
            if let call = stats.first(where: { $0.hasPrefix("calls=") }), let count = Int(call.dropFirst(6)) { calls[name] = count }
        }
        return calls
    }
}
