import ArgumentParser
import Foundation
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import LLMQTelemetry
import LLMQWorker
import Logging

@main
struct LLMQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llmq",
        abstract: "A pool of LLM workers behind a Redis stream.",
        subcommands: [
            WorkerCommand.self, PublishCommand.self, StatusCommand.self, HealthCommand.self, SimCommand.self, BenchCommand.self,
        ]
    )
}

/// Options every command that talks to Redis shares. Each sets the configuration key in
/// brackets, over the file (`--config`, `LLMQ_CONFIG`) and the environment (`LLMQ_*`).
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "JSON configuration file (or LLMQ_CONFIG).")
    var config: String?

    @Option(name: .long, help: "redis://[user:password@]host:port[/db] [redis.url]")
    var redisUrl: String?

    @Option(name: .customLong("request-stream"), help: "Request stream. [streams.requests]")
    var requestStream: String?

    @Option(name: .long, help: "Consumer group. [streams.group]")
    var group: String?

    @Option(name: .long, help: "Reply stream. [streams.replies]")
    var replies: String?

    var flags: [ConfigurationLoader.Flag] {
        var flags: [ConfigurationLoader.Flag] = []
        flags.add("redis.url", redisUrl)
        flags.add("streams.requests", requestStream)
        flags.add("streams.group", group)
        flags.add("streams.replies", replies)
        return flags
    }

    /// Loads the configuration, or prints the problem on one line and exits with code 2.
    func load(extra: [ConfigurationLoader.Flag] = []) throws -> WorkerConfiguration {
        try loadWithSources(extra: extra).configuration
    }

    /// ``load(extra:)``, with where each value came from (for `--print-config`).
    func loadWithSources(extra: [ConfigurationLoader.Flag] = []) throws -> LoadedConfiguration {
        do {
            return try ConfigurationLoader.loadWithSources(file: config, flags: flags + extra)
        } catch {
            FileHandle.standardError.write(Data("llmq: invalid configuration: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

extension [ConfigurationLoader.Flag] {
    /// Adds the value of the flag that sets `key` (its name from the key's registry entry), if
    /// the flag was given.
    mutating func add(_ key: String, _ value: String?) {
        guard let value else { return }
        guard let flag = ConfigurationKey.named(key)?.flag else { preconditionFailure("\(key) has no flag in ConfigurationKey.all") }
        append(.init(key: key, flag: flag, value: value))
    }
}

func bootstrapLogging(level: Logger.Level, format: WorkerConfiguration.LogFormat = .text) {
    LoggingSystem.bootstrap { label in
        switch format {
        case .text:
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        case .json:
            var handler = JSONLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// A peer that closes its socket while llmq writes to it (Redis, a backend, a proxy) must cause
/// an error on that connection, not SIGPIPE's default: the end of the process.
func ignoreBrokenPipes() {
    signal(SIGPIPE, SIG_IGN)
}

func fail(_ message: String, code: Int32 = 1) -> ExitCode {
    FileHandle.standardError.write(Data("llmq: \(message)\n".utf8))
    return ExitCode(code)
}
