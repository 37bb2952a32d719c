import ArgumentParser
import Foundation
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

    @Option(name: .customLong("ttl-ms"), help: "Expire the request if no worker takes it within this time.")
    var ttlMs: Int?

    @Flag(help: "Wait for the reply and print it.")
    var wait = false

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

        let client = RedisClient(configuration: configuration.redis, name: "llmq-publish")
        defer { client.shutdown() }
        let publisher = Publisher(client: client, streams: configuration.streams)
        do {
            let entryID = try await publisher.publish(fields)
            print(entryID)
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
}
