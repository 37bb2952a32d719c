import ArgumentParser
import Foundation
import LLMQClient
import LLMQRedis
import LLMQWorker

struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish one request and print its entry ID (with --wait, its reply)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Publish to this queue's stream (a configured queue, or <streams.requests>:NAME).")
    var queue: String?

    @Option(name: .long, help: "The prompt text.")
    var prompt: String?

    @Option(name: .long, help: "A JSON array of {\"role\",\"content\"} messages, instead of --prompt.")
    var messages: String?

    @Option(name: .long, help: "A system message.")
    var system: String?

    @Option(name: .long, help: "The model (overrides the worker's).")
    var model: String?

    @Option(name: .customLong("max-tokens"))
    var maxTokens: Int?

    @Option var temperature: Double?

    @Option(name: .customLong("top-p"))
    var topP: Double?

    @Option(name: .customLong("top-k"))
    var topK: Int?

    @Option var seed: Int?

    @Option(help: "A stop string; repeat for several.")
    var stop: [String] = []

    @Option(help: "Your correlation id, echoed in the reply.")
    var id: String?

    @Option(name: .customLong("reply-to"), help: "A reply stream of your own (must start with the allowed prefix).")
    var replyTo: String?

    @Option(help: "Who the request is for: under users.fair, users are served in turn.")
    var user: String?

    @Option(name: .customLong("ttl-ms"), help: "Expire the request if no worker takes it within this time.")
    var ttlMs: Int?

    @Flag(help: "Wait for the reply and print it.")
    var wait = false

    @Flag(help: "Stream the answer: print its text as it is generated, then the timings.")
    var stream = false

    @Option(name: .customLong("stream-to"), help: "Stream the answer to this stream instead of its own (must start with the allowed prefix).")
    var streamTo: String?

    @Option(help: "Seconds to wait for the reply.")
    var timeout: Double = 120

    func validate() throws {
        if (prompt == nil) == (messages == nil) {
            throw ValidationError("give exactly one of --prompt and --messages")
        }
    }

    func run() async throws {
        ignoreBrokenPipes()
        var configuration = try connection.load()
        if let queue { configuration.streams.requests = configuration.queue(named: queue).stream }
        var fields: [(String, String)] = []
        func add(_ name: String, _ value: CustomStringConvertible?) {
            if let value { fields.append((name, value.description)) }
        }
        add("prompt", prompt)
        add("messages", messages)
        add("system", system)
        add("model", model)
        add("max_tokens", maxTokens)
        add("temperature", temperature)
        add("top_p", topP)
        add("top_k", topK)
        add("seed", seed)
        if stop.count == 1 {
            add("stop", stop[0])
        } else if !stop.isEmpty, let json = try? JSONEncoder().encode(stop) {
            add("stop", String(decoding: json, as: UTF8.self))
        }
        add("id", id)
        add("reply_to", replyTo)
        add("ttl_ms", ttlMs)
        add("user", user)
        if stream || streamTo != nil { add("stream", "1") }
        add("stream_to", streamTo)

        let client = RedisClient(configuration: configuration.redis, name: "llmq-publish")
        defer { client.shutdown() }
        let publisher = Publisher(client: client, streams: configuration.streams)
        do {
            let published = ContinuousClock.now
            let entryID = try await publisher.publish(fields)
            // Unbuffered, so the ID comes before a streamed answer's text.
            FileHandle.standardOutput.write(Data((entryID + "\n").utf8))
            if stream || streamTo != nil {
                let queueName = queue ?? "default"
                let key = streamTo ?? configuration.chunkStream(queue: queueName, entryID: entryID)
                try await follow(key, id: id ?? entryID, publisher: publisher, published: published)
            }
            guard wait else { return }
            guard let reply = try await publisher.waitForReply(
                to: entryID, on: replyTo, timeout: .milliseconds(Int64(timeout * 1000)))
            else {
                throw fail("no reply within \(timeout) s (is a worker running? see llmq status)")
            }
            for (name, value) in reply { print("\(name): \(value)") }
            if reply.contains(where: { $0 == ("status", "error") }) { throw ExitCode(3) }
        } catch let error as RedisError {
            throw fail("\(error)")
        }
    }

    /// Prints the answer's text as its chunks arrive, a line for each reset, and at the end the
    /// time to first token seen here and the backend's timings.
    private func follow(_ key: String, id: String, publisher: Publisher, published: ContinuousClock.Instant) async throws {
        var firstText: Duration?
        let output = FileHandle.standardOutput
        let done = try await publisher.follow(key, id: id, timeout: .milliseconds(Int64(timeout * 1000))) { chunk in
            let field = { (name: String) in chunk.first { $0.0 == name }?.1 }
            if field("reset") == "1" {
                output.write(Data("\n[reset: \(field("reason") ?? "")]\n".utf8))
            } else if let delta = field("delta") {
                if firstText == nil { firstText = ContinuousClock.now - published }
                output.write(Data(delta.utf8))
            }
        }
        guard let done else {
            throw fail("\nthe answer did not finish within \(timeout) s (is a worker running? see llmq status)")
        }
        print("")
        var summary: [String] = []
        if let firstText { summary.append("first text here after: \(String(format: "%.1f", firstText.fractionalMilliseconds)) ms") }
        for (name, value) in done where !["id", "seq", "done", "delta"].contains(name) { summary.append("\(name): \(value)") }
        print(summary.joined(separator: "\n"))
        if !wait, done.contains(where: { $0 == ("status", "error") }) { throw ExitCode(3) }
    }
}
