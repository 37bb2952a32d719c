import ArgumentParser
import Foundation
import LLMQConfiguration
import LLMQTelemetry
import LLMQWorker
import Logging
import Metrics
import NIOConcurrencyHelpers
import ServiceLifecycle

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Serve requests from the stream as one consumer of the group.",
        discussion: """
            Configuration comes from a JSON file (--config or LLMQ_CONFIG), then LLMQ_* environment \
            variables, then these flags, each overriding the one before. SIGTERM or SIGINT stops \
            reading and lets requests in flight finish (shutdownGraceSeconds); a second one ends \
            the process at once (requests in flight stay pending for other workers).
            --print-config shows what the worker would run with, and where each value came from.
            Exit codes: 0 stopped, 2 invalid configuration, 3 Redis refused the credentials.
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

    @Option(name: .long, help: "text or json. [logFormat]")
    var logFormat: String?

    @Option(name: .long, help: "Serve /metrics, /healthz and /readyz on this port (0 = off). [metrics.port]")
    var metricsPort: String?

    @Option(name: .long, help: "Address the metrics listener binds. [metrics.host]")
    var metricsHost: String?

    @Flag(name: .long, help: "Print the effective configuration (key, value, source; secrets redacted) and exit without connecting.")
    var printConfig = false

    /// Prints the README's configuration table from the key registry (to regenerate it).
    @Flag(name: .long, help: .hidden)
    var printKeysMarkdown = false

    /// The worker's exit code when Redis refuses its credentials: a restart with the same
    /// configuration cannot help, and an orchestrator should be able to tell.
    static let authenticationExitCode: Int32 = 3

    func run() async throws {
        ignoreBrokenPipes()
        if printKeysMarkdown {
            FileHandle.standardOutput.write(Data(ConfigurationKey.markdownTable().utf8))
            return
        }
        var flags: [ConfigurationLoader.Flag] = []
        flags.add("backend.type", backend)
        flags.add("backend.endpoint", endpoint)
        flags.add("backend.model", model)
        flags.add("concurrency", concurrency)
        flags.add("consumer", consumer)
        flags.add("logLevel", logLevel)
        flags.add("logFormat", logFormat)
        flags.add("metrics.port", metricsPort)
        flags.add("metrics.host", metricsHost)
        let loaded = try connection.loadWithSources(extra: flags)
        if printConfig {
            FileHandle.standardOutput.write(Data(loaded.printed().utf8))
            return
        }
        let configuration = loaded.configuration

        bootstrapLogging(level: configuration.logLevel, format: configuration.logFormat)
        let logger = Logger(label: "llmq")
        // Before the worker exists: its metrics are created with the factory in place.
        let export = configuration.metrics.port.map { _ in PrometheusExport() }
        if let export { MetricsSystem.bootstrap(export) }
        // The lease lasts as long as an entry may sit idle before others claim it (at least 30 s),
        // and is renewed three times as often.
        let lease = await ConsumerNameLease.acquire(
            redis: configuration.redis, group: configuration.streams.group, wanted: configuration.consumer,
            ttl: max(.seconds(30), configuration.recovery.claimMinIdle))
        let worker: Worker
        do {
            worker = try Worker(configuration: configuration, logger: logger, lease: lease)
        } catch {
            throw fail("invalid configuration: \(error)", code: 2)
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let export, let port = configuration.metrics.port {
            // Listed first, so it stops last: /readyz answers "stopping" while requests drain.
            let server = OperationsServer(
                configuration: .init(host: configuration.metrics.host, port: port),
                metrics: { export.render() },
                liveness: {
                    let verdict = worker.liveness()
                    return HealthReport(isHealthy: verdict.isHealthy, detail: verdict.detail)
                },
                readiness: {
                    let verdict = worker.readiness()
                    return HealthReport(isHealthy: verdict.isReady, detail: verdict.detail)
                },
                logger: logger)
            services.append(.init(service: server))
        }
        services.append(.init(service: worker))
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
        let secondSignal = SecondSignalExit(signals: [SIGTERM, SIGINT])
        defer { secondSignal.cancel() }
        do {
            try await group.run()
        } catch let error as WorkerError where error.code == .redisAuthentication {
            throw fail("\(error)", code: Self.authenticationExitCode)
        }
    }
}

/// Ends the process at once on the second SIGTERM/SIGINT (in any mix): the first starts a
/// graceful shutdown, which may wait up to `shutdownGraceSeconds`; an operator who presses
/// Ctrl-C again, or an orchestrator that gave up, does not want to wait. Entries in flight stay
/// pending in Redis and another worker claims them, as after a crash.
final class SecondSignalExit: @unchecked Sendable {
    // @unchecked: `sources` is set in init and only read by `cancel()`; the handlers share
    // nothing but the atomic count.
    private var sources: [any DispatchSourceSignal] = []
    private let count = NIOLockedValueBox<Int>(0)

    init(signals: [Int32]) {
        sources = signals.map { signal in
            let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
            source.setEventHandler { [self] in
                if count.withLockedValue({ $0 += 1; return $0 }) >= 2 {
                    FileHandle.standardError.write(Data("llmq: second signal; exiting now, requests in flight stay pending\n".utf8))
                    _exit(128 + signal)
                }
            }
            source.resume()
            return source
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
    }
}
