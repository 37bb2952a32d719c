import ArgumentParser
import LLMQWorker
import Logging
import ServiceLifecycle

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Serve requests from the stream as one consumer of the group.",
        discussion: """
            Configuration comes from a JSON file (--config or LLMQ_CONFIG), then LLMQ_* environment \
            variables, then these flags, each overriding the one before. SIGTERM or SIGINT stops \
            reading and lets requests in flight finish (shutdownGraceSeconds).
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .long, help: "llama-cpp, ollama or openai. [backend.type]")
    var backend: String?

    @Option(name: .long, help: "Backend base URL or full API path. [backend.endpoint]")
    var endpoint: String?

    @Option(name: .long, help: "Model to ask for. [backend.model]")
    var model: String?

    @Option(name: .long, help: "Requests in flight at once. [concurrency]")
    var concurrency: String?

    @Option(name: .long, help: "Consumer name, unique per worker (default hostname-pid). [consumer]")
    var consumer: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error. [logLevel]")
    var logLevel: String?

    func run() async throws {
        var flags: [ConfigurationLoader.Flag] = []
        flags.add("backend.type", "--backend", backend)
        flags.add("backend.endpoint", "--endpoint", endpoint)
        flags.add("backend.model", "--model", model)
        flags.add("concurrency", "--concurrency", concurrency)
        flags.add("consumer", "--consumer", consumer)
        flags.add("logLevel", "--log-level", logLevel)
        let configuration = try connection.load(extra: flags)

        bootstrapLogging(level: configuration.logLevel)
        let logger = Logger(label: "llmq")
        let worker: Worker
        do {
            worker = try Worker(configuration: configuration, logger: logger)
        } catch {
            throw fail("invalid configuration: \(error)", code: 2)
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: worker)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
        try await group.run()
    }
}
