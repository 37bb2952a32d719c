import Hummingbird
import Logging
import ServiceLifecycle

/// A simulated LLM server speaking llama-server's and Ollama's HTTP APIs on one port.
///
/// It stands in for a real backend where one must be slow, busy or broken on purpose: requests share
/// `slots` parallel generation slots behind a FIFO queue, take `promptMilliseconds + tokens × tokenMilliseconds`
/// plus `promptTokenMilliseconds` per prompt token the prompt cache does not hold (see ``PromptCache``),
/// and meet the configured `SimulatorFaults`. Besides the two APIs it serves `GET /sim/stats`,
/// `POST /sim/reset` and `GET`/`POST /sim/faults` for tests.
///
/// ```swift
/// let simulator = Simulator(configuration: .init(port: 0, slots: 2), logger: logger) { port in
///     print("listening on \(port)")
/// }
/// try await simulator.run()
/// ```
public struct Simulator: Sendable, Service {
    /// The configuration the simulator was created with (faults may since have been replaced at run time).
    public let configuration: SimulatorConfiguration
    private let logger: Logger
    private let onServerRunning: @Sendable (_ port: Int) async -> Void
    private let state: SimulatorState

    /// Creates a simulator; nothing listens until `run()`.
    /// - Parameters:
    ///   - configuration: address, speed, capacity and faults.
    ///   - logger: receives the server's logs (info and below).
    ///   - onServerRunning: called once the socket is bound, with the actual port (useful with port 0).
    public init(
        configuration: SimulatorConfiguration,
        logger: Logger,
        onServerRunning: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onServerRunning = onServerRunning
        self.state = SimulatorState(
            slots: max(configuration.slots, 1),
            maxQueue: max(configuration.maxQueue, 0),
            cacheEntries: max(configuration.cacheEntries, 0),
            faults: configuration.faults
        )
    }

    /// Serves until the task is cancelled or a graceful shutdown is triggered.
    /// - Throws: `SimulatorConfigurationError` for an invalid configuration, or the server's bind error.
    public func run() async throws {
        try configuration.validate()
        let responder = SimulatorResponder(configuration: configuration, state: state, logger: logger)
        let onServerRunning = self.onServerRunning
        let logger = self.logger
        let configuration = self.configuration
        let application = Application(
            responder: responder,
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port),
                serverName: "llmq-sim"
            ),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                logger.info(
                    "LLM simulator listening",
                    metadata: [
                        "llmq.sim.host": "\(configuration.host)", "llmq.sim.port": "\(port)",
                        "llmq.sim.slots": "\(configuration.slots)",
                        "llmq.sim.token_ms": "\(configuration.tokenMilliseconds)",
                    ]
                )
                await onServerRunning(port)
            },
            logger: logger
        )
        try await application.run()
    }

    /// The current counters, as `GET /sim/stats` serves them.
    public var stats: SimulatorStats {
        state.stats
    }

    /// The faults in force now.
    public var faults: SimulatorFaults {
        state.faults
    }

    /// Replaces the faults, as `POST /sim/faults` does; `failFirst` counts again from now.
    /// - Throws: `SimulatorConfigurationError` naming an out-of-range field.
    public func setFaults(_ faults: SimulatorFaults) throws(SimulatorConfigurationError) {
        try faults.validate()
        state.setFaults(faults)
    }

    /// Zeroes the counters, as `POST /sim/reset` does.
    public func resetStats() {
        state.resetStats()
    }
}
