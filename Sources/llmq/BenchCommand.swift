import ArgumentParser
import Foundation
import LLMQBackends
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import LLMQWorker

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Publish N requests, collect their replies, and report throughput and latency percentiles.",
        discussion: """
            Replies go to a private reply stream (llmq:bench:<run>). Latencies come from the replies: \
            queue (publish to claim), backend, total (claim to reply), and llmq's own added time \
            (total - backend). Throughput is replies per second between the first and the last reply, \
            by Redis's clock (the reply entry IDs), so a pre-filled stream (--prefill-only, then start \
            workers, then --collect-only) measures the drain rate.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Publish to and measure this queue's stream (a configured queue, or <streams.requests>:NAME).")
    var queue: String?

    @Option(name: .shortAndLong, help: "Requests to publish.") var requests = 1000
    @Option(help: "Requests per second to publish at (0: as fast as possible).") var rate: Double = 0
    @Option(name: .customLong("max-tokens")) var maxTokens = 8
    @Option(help: "Prompt text.") var prompt = "Write a haiku about queues"
    @Option(help: "The requests' user (under users.fair, whose turn they wait for).") var user: String?
    @Option(help: "Seconds to wait for all replies.") var timeout: Double = 600
    @Option(help: "Run name: the reply stream is llmq:bench:<run>.") var run: String?
    @Flag(name: .customLong("prefill-only"), help: "Publish, print the run name, do not wait for replies.") var prefillOnly = false
    @Flag(name: .customLong("collect-only"), help: "Do not publish; collect the replies of --run.") var collectOnly = false
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "Also report replies per interval of this many seconds, by backend (0: no timeline).") var timeline: Double = 0
    @Flag(help: "Streamed requests at --concurrency: report the time to first token as the producer sees it, and Redis commands per request.")
    var stream = false
    @Option(help: "With --stream: requests outstanding at once (a new one is published as each is answered).") var concurrency = 100
    @Option(help: "With --stream: send the same requests straight to this backend endpoint instead (backend.type decides the API), for comparison.")
    var direct: String?

    func validate() throws {
        if collectOnly && run == nil { throw ValidationError("--collect-only needs --run") }
        if requests < 1 { throw ValidationError("--requests must be at least 1") }
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if direct != nil && !stream { throw ValidationError("--direct needs --stream") }
        if stream && (prefillOnly || collectOnly) { throw ValidationError("--stream runs closed-loop: no --prefill-only or --collect-only") }
    }

    func run() async throws {
        ignoreBrokenPipes()
        var configuration = try connection.load()
        if let queue { configuration.streams.requests = configuration.queue(named: queue).stream }
        let name = self.run ?? String(UUID().uuidString.prefix(8)).lowercased()
        if stream {
            try await runStreaming(configuration: configuration, run: name)
            return
        }
        // Under the queue's prefix: in cluster mode that keeps the replies in its slot.
        let replyStream = configuration.streams.serving(configuration.streams.requests).replyToPrefix + "bench:\(name)"
        let client = RedisClient(configuration: configuration.redis, name: "llmq-bench")
        defer { client.shutdown() }
        do {
            if !collectOnly {
                try await publish(client: client, streams: configuration.streams, replyStream: replyStream)
            }
            if prefillOnly {
                print(name)
                return
            }
            let replies = try await collect(client: client, replyStream: replyStream)
            let report = BenchReport(run: name, requested: requests, replies: replies, timelineSeconds: timeline)
            try show(report, text: report.text)
            if report.replies < requests { throw ExitCode(3) }
        } catch let error as RedisError {
            throw fail("\(error)")
        }
    }

    /// Prints a report as text, or with `--json` as JSON.
    private func show(_ report: some Encodable, text: String) throws {
        guard json else {
            print(text)
            return
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }

    private func runStreaming(configuration: WorkerConfiguration, run: String) async throws {
        let bench = StreamBench(
            requests: requests, concurrency: concurrency, prompt: prompt, maxTokens: maxTokens,
            timeout: .milliseconds(Int64(timeout * 1000)))
        let report: StreamBench.Report
        if let direct {
            var backendConfiguration = configuration.backend
            backendConfiguration.endpoint = direct
            let backend = try makeChatBackend(backendConfiguration, maxConcurrentRequests: concurrency)
            defer { backend.shutdown() }
            report = await bench.direct(backend: backend)
        } else {
            let client = RedisClient(configuration: configuration.redis, name: "llmq-bench")
            var readerConfiguration = configuration.redis
            readerConfiguration.commandTimeout += .seconds(1)
            let reader = RedisClient(configuration: readerConfiguration, name: "llmq-bench-read")
            defer {
                client.shutdown()
                reader.shutdown()
            }
            do {
                let streams = configuration.streams.serving(configuration.streams.requests)
                report = try await bench.throughQueue(
                    client: client, reader: reader, requestStream: streams.requests, prefix: streams.replyToPrefix, run: run)
            } catch {
                throw fail("\(error)")
            }
        }
        try show(report, text: report.text)
        if report.answered + report.errors < requests { throw ExitCode(3) }
    }

    private func publish(client: RedisClient, streams: WorkerConfiguration.Streams, replyStream: String) async throws(RedisError) {
        let batch = rate > 0 ? max(1, min(100, Int(rate / 100))) : 200
        let start = ContinuousClock.now
        var sent = 0
        while sent < requests {
            let count = min(batch, requests - sent)
            var commands: [RedisCommand] = []
            commands.reserveCapacity(count)
            for index in sent..<sent + count {
                var command = RedisCommand(
                    "XADD", streams.requests, "*", "prompt", prompt, "max_tokens", String(maxTokens),
                    "id", "bench-\(index)", "reply_to", replyStream)
                if let user { command.append(contentsOf: RedisCommand("user", user)) }
                commands.append(command)
            }
            for reply in try await client.pipeline(commands) {
                if let message = reply.errorMessage { throw RedisError(.server, message) }
            }
            sent += count
            if rate > 0 {
                // Pace against the schedule, not the last send, so the rate does not drift.
                let due = start + .milliseconds(Int64(Double(sent) / rate * 1000))
                if due > ContinuousClock.now { try? await Task.sleep(until: due, clock: .continuous) }
            }
        }
    }

    private func collect(client: RedisClient, replyStream: String) async throws(RedisError) -> [BenchReport.Reply] {
        var replies: [BenchReport.Reply] = []
        replies.reserveCapacity(requests)
        var cursor = "0-0"
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        var lastProgress = ContinuousClock.now
        while replies.count < requests && ContinuousClock.now < deadline {
            let result = try await client.send(
                RedisCommand("XREAD", "COUNT", "5000", "BLOCK", "1000", "STREAMS", replyStream, cursor))
            for entry in try StreamsReply(decoding: result).entries {
                cursor = entry.id
                replies.append(BenchReport.Reply(entry))
            }
            if ContinuousClock.now - lastProgress > .seconds(2) {
                lastProgress = ContinuousClock.now
                FileHandle.standardError.write(Data("bench: \(replies.count)/\(requests) replies\n".utf8))
            }
        }
        return replies
    }
}

/// Throughput and latency percentiles of one bench run.
struct BenchReport: Encodable {
    struct Reply {
        var replyMilliseconds: Int64
        var requestMilliseconds: Int64?
        var ok: Bool
        var queue: Double?
        var backend: Double?
        var total: Double?
        /// The backend that answered (`backend`), or "-" for replies no backend produced.
        var backendName: String
        var completionTokens: Int?
        var generationMilliseconds: Double?

        init(_ entry: StreamEntry) {
            replyMilliseconds = entry.timestampMilliseconds ?? 0
            let values = Dictionary(entry.textFields.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
            ok = values["status"] == "ok"
            requestMilliseconds = values["request"].flatMap { Int64($0.split(separator: "-").first ?? "") }
            queue = values["queue_ms"].flatMap(Double.init)
            backend = values["backend_ms"].flatMap(Double.init)
            total = values["total_ms"].flatMap(Double.init)
            backendName = values["backend"] ?? "-"
            completionTokens = values["completion_tokens"].flatMap { Int($0) }
            generationMilliseconds = values["generation_ms"].flatMap(Double.init)
        }
    }

    /// One backend's part of a run, to compare backends (an A/B split) side by side.
    struct BackendShare: Encodable {
        var name: String
        var replies: Int
        var errors: Int
        var backendMilliseconds: Percentiles
        /// Completion tokens per second of generation, over the replies that report both.
        var tokensPerSecond: Double?
    }

    struct Percentiles: Encodable {
        var p50: Double
        var p90: Double
        var p99: Double
        var max: Double

        init(_ values: [Double]) {
            let sorted = values.sorted()
            func at(_ fraction: Double) -> Double {
                guard !sorted.isEmpty else { return 0 }
                return sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)]
            }
            p50 = at(0.50)
            p90 = at(0.90)
            p99 = at(0.99)
            max = sorted.last ?? 0
        }
    }

    var run: String
    var requested: Int
    var replies: Int
    var errors: Int
    /// Replies per second between the first and the last reply (Redis clock): the drain rate.
    var throughputPerSecond: Double
    /// Replies per second from the first request's publication to the last reply (Redis clock):
    /// what a producer sees, including the pipeline filling up.
    var endToEndPerSecond: Double
    var queueMilliseconds: Percentiles
    var backendMilliseconds: Percentiles
    var totalMilliseconds: Percentiles
    /// total - backend: what llmq itself adds between claiming a request and replying.
    var addedMilliseconds: Percentiles
    /// From publication to reply (the entry IDs, Redis clock): what the producer waits.
    var latencyMilliseconds: Percentiles
    /// By the backend that answered, busiest first.
    var backends: [BackendShare]
    /// Replies per interval from the first publication (with `--timeline`), to watch a run
    /// change: a backend lost and back, a burst.
    var timeline: [Interval]

    struct Interval: Encodable {
        /// Seconds from the first publication to the interval's start.
        var start: Double
        var repliesPerSecond: Double
        var errors: Int
        /// Replies by backend in the interval.
        var backends: [String: Int]
    }

    init(run: String, requested: Int, replies: [Reply], timelineSeconds: Double = 0) {
        self.run = run
        self.requested = requested
        self.replies = replies.count
        errors = replies.filter { !$0.ok }.count
        let times = replies.map(\.replyMilliseconds)
        if let first = times.min(), let last = times.max(), last > first {
            throughputPerSecond = Double(replies.count - 1) * 1000 / Double(last - first)
        } else {
            throughputPerSecond = 0
        }
        if let first = replies.compactMap(\.requestMilliseconds).min(), let last = times.max(), last > first {
            endToEndPerSecond = Double(replies.count) * 1000 / Double(last - first)
        } else {
            endToEndPerSecond = 0
        }
        queueMilliseconds = Percentiles(replies.compactMap(\.queue))
        backendMilliseconds = Percentiles(replies.compactMap(\.backend))
        totalMilliseconds = Percentiles(replies.compactMap(\.total))
        addedMilliseconds = Percentiles(replies.compactMap { reply in
            reply.total.flatMap { total in reply.backend.map { total - $0 } }
        })
        latencyMilliseconds = Percentiles(replies.compactMap { reply in reply.requestMilliseconds.map { Double(reply.replyMilliseconds - $0) } })
        backends = Dictionary(grouping: replies, by: \.backendName).map { name, replies in
            let timed = replies.filter { ($0.completionTokens ?? 0) > 0 && ($0.generationMilliseconds ?? 0) > 0 }
            let tokens = timed.compactMap(\.completionTokens).reduce(0, +)
            let milliseconds = timed.compactMap(\.generationMilliseconds).reduce(0, +)
            return BackendShare(
                name: name, replies: replies.count, errors: replies.filter { !$0.ok }.count,
                backendMilliseconds: Percentiles(replies.compactMap(\.backend)),
                tokensPerSecond: milliseconds > 0 ? Double(tokens) * 1000 / milliseconds : nil)
        }.sorted { $0.replies > $1.replies }
        timeline = []
        if timelineSeconds > 0, let origin = replies.compactMap(\.requestMilliseconds).min() {
            let width = Int64(timelineSeconds * 1000)
            let buckets = Dictionary(grouping: replies) { max(0, ($0.replyMilliseconds - origin) / width) }
            for bucket in 0...(buckets.keys.max() ?? 0) {
                let inside = buckets[bucket] ?? []
                timeline.append(Interval(
                    start: Double(bucket * width) / 1000, repliesPerSecond: Double(inside.count) / timelineSeconds,
                    errors: inside.filter { !$0.ok }.count,
                    backends: Dictionary(grouping: inside, by: \.backendName).mapValues(\.count)))
            }
        }
    }

    var text: String {
        func row(_ name: String, _ p: Percentiles) -> String {
            name.padding(toLength: 10, withPad: " ", startingAt: 0)
                + [p.p50, p.p90, p.p99, p.max].map { String(format: "%12.3f", $0) }.joined()
        }
        return """
            run \(run): \(replies)/\(requested) replies, \(errors) errors, \(String(format: "%.1f", throughputPerSecond)) replies/s (first to last reply), \(String(format: "%.1f", endToEndPerSecond)) replies/s (first publish to last reply)
            ms               p50         p90         p99         max
            \(row("queue", queueMilliseconds))
            \(row("backend", backendMilliseconds))
            \(row("total", totalMilliseconds))
            \(row("added", addedMilliseconds))
            \(row("latency", latencyMilliseconds))
            """ + (backends.count > 1 ? "\n" + backendTable : "") + (timeline.isEmpty ? "" : "\n" + timelineTable)
    }

    private var timelineTable: String {
        let names = backends.map(\.name)
        var lines = ["from s   replies/s  errors  " + names.joined(separator: "  ")]
        for interval in timeline {
            lines.append(
                String(format: "%6.0f %11.1f %7d  ", interval.start, interval.repliesPerSecond, interval.errors)
                    + names.map { String(interval.backends[$0] ?? 0).padding(toLength: max($0.count, 4), withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        return lines.joined(separator: "\n")
    }

    /// Each backend's share, latency and generation speed (shown when several answered).
    private var backendTable: String {
        var lines = ["backend          replies  share  errors  backend_ms p50      p99   tokens/s"]
        for share in backends {
            let tokens = share.tokensPerSecond.map { String(format: "%10.1f", $0) } ?? "         -"
            lines.append(
                share.name.padding(toLength: 16, withPad: " ", startingAt: 0)
                    + String(format: "%8d %5.1f%% %7d %14.3f %8.3f", share.replies, Double(share.replies) * 100 / Double(max(1, replies)), share.errors, share.backendMilliseconds.p50, share.backendMilliseconds.p99)
                    + tokens)
        }
        return lines.joined(separator: "\n")
    }
}
