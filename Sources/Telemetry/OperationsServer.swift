import Hummingbird
import Logging
import NIOPosix
import ServiceLifecycle

/// A health verdict: whether the check passed and, when not, why.
public struct HealthReport: Sendable, Hashable {
    public var isHealthy: Bool
    /// One line for people; served as the response body.
    public var detail: String

    public init(isHealthy: Bool, detail: String) {
        self.isHealthy = isHealthy
        self.detail = detail
    }
}

/// The HTTP listener operators and orchestrators talk to: `GET /metrics` (Prometheus text
/// format), `GET /healthz` (liveness) and `GET /readyz` (readiness). Both health answers are
/// 200 or 503 with a one-line reason, computed from state the worker keeps anyway: a probe
/// never waits on Redis or the backend.
public struct OperationsServer: Service {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    private let configuration: Configuration
    private let metrics: @Sendable () -> [UInt8]
    private let liveness: @Sendable () -> HealthReport
    private let readiness: @Sendable () -> HealthReport
    private let logger: Logger
    private let onListening: @Sendable (_ port: Int) async -> Void

    /// - Parameters:
    ///   - metrics: Renders the exposition text on each scrape.
    ///   - onListening: Called with the bound port (useful with port 0).
    public init(
        configuration: Configuration, metrics: @escaping @Sendable () -> [UInt8],
        liveness: @escaping @Sendable () -> HealthReport, readiness: @escaping @Sendable () -> HealthReport,
        logger: Logger, onListening: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.metrics = metrics
        self.liveness = liveness
        self.readiness = readiness
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let router = Router()
        let metrics = self.metrics
        let liveness = self.liveness
        let readiness = self.readiness
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics())))
        }
        router.get("/healthz") { _, _ in Self.respond(liveness()) }
        router.get("/readyz") { _, _ in Self.respond(readiness()) }
        let logger = self.logger
        let configuration = self.configuration
        let onListening = self.onListening
        // One event-loop thread: a scrape and two probes every few seconds need no more, and
        // Hummingbird's default (one per core) costs memory on large hosts.
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { eventLoops.shutdownGracefully { _ in } }
        let application = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "llmq"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                logger.info("metrics and health listening", metadata: [
                    "llmq.metrics.host": "\(configuration.host)", "llmq.metrics.port": "\(port)",
                ])
                await onListening(port)
            },
            eventLoopGroupProvider: .shared(eventLoops),
            logger: logger)
        try await application.run()
    }

    private static func respond(_ report: HealthReport) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(
            status: report.isHealthy ? .ok : .serviceUnavailable, headers: headers,
            body: .init(byteBuffer: ByteBuffer(string: report.detail + "\n")))
    }
}

extension OperationsServer: CustomStringConvertible {
    /// How service-lifecycle's logs name it.
    public var description: String {
        "OperationsServer(\(configuration.host):\(configuration.port))"
    }
}
