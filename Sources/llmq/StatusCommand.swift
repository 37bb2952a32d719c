import ArgumentParser
import Foundation
import LLMQRedis
import LLMQWorker

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the stream, the group's lag and pending entries, and each consumer."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        ignoreBrokenPipes()
        let configuration = try connection.load()
        let client = RedisClient(configuration: configuration.redis, name: "llmq-status")
        defer { client.shutdown() }
        do {
            let status = try await QueueStatus.read(from: client, streams: configuration.streams)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(status), as: UTF8.self))
            } else {
                print(status.text)
            }
        } catch let error as RedisError {
            throw fail("\(error)")
        }
    }
}
