import ArgumentParser
import Foundation
import LLMQHTTP

/// `llmq health`: asks a worker's own listener, so that a container needs no curl for its
/// HEALTHCHECK.
struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Ask a worker's /healthz (or /readyz) on this host; exit 0 when it answers 200.",
        discussion: """
            The port comes from --port, else from the worker's configuration (metrics.port: \
            LLMQ_METRICS_PORT or the file in LLMQ_CONFIG). Exit codes: 0 healthy (ready), \
            1 not, 2 no port configured.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Ask /readyz instead of /healthz.")
    var ready = false

    @Option(help: "The worker's metrics port. [metrics.port]")
    var port: Int?

    @Option(help: "Host to ask (default 127.0.0.1, or metrics.host unless it is a wildcard).")
    var host: String?

    @Option(help: "Seconds to wait for the answer.")
    var timeout: Double = 3

    func run() async throws {
        ignoreBrokenPipes()
        let configuration = try connection.load()
        guard let port = port ?? configuration.metrics.port else {
            throw fail("no metrics port: set metrics.port (LLMQ_METRICS_PORT) or --port", code: 2)
        }
        let configuredHost = configuration.metrics.host
        let host = host ?? (["0.0.0.0", "::", "[::]"].contains(configuredHost) ? "127.0.0.1" : configuredHost)
        let url = "http://\(host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host):\(port)/\(ready ? "readyz" : "healthz")"
        let client = HTTPClient()
        defer { client.shutdown() }
        do {
            let response = try await client.execute(.init(
                method: .get, url: url, headers: [], body: nil, timeout: .milliseconds(Int64(max(timeout, 0.01) * 1000))))
            let body = String(decoding: response.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            print("\(url): \(response.status) \(body)")
            if response.status != 200 { throw ExitCode(1) }
        } catch let error as HTTPClientError {
            throw fail("\(url): \(error)", code: 1)
        }
    }
}
