import Foundation
import Hummingbird
import HummingbirdTesting
import LLMQSimulator
import LLMQTestSupport
import Logging
import ServiceLifecycle
import Testing

/// `.withSimulator(...)`: a real simulator on a free loopback port for the test, stopped by
/// graceful shutdown (as `llmq sim` is on SIGTERM) when it ends; the test reads a client to it
/// with `try SimulatorFixture.current`. Test bodies stay at function scope (see `ScopedFixture`).
struct SimulatorFixture: ScopedFixture {
    let configurations: [SimulatorConfiguration]

    func start(in scope: FixtureScope) async throws {
        var clients: [SimulatorClient] = []
        for configuration in configurations { clients.append(try await Self.run(configuration, in: scope)) }
        scope.store(clients)
    }

    private static func run(_ configuration: SimulatorConfiguration, in scope: FixtureScope) async throws -> SimulatorClient {
        var configuration = configuration
        configuration.host = "127.0.0.1"
        configuration.port = 0
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "llmq.sim.test")
        logger.logLevel = .warning
        let simulator = Simulator(configuration: configuration, logger: logger) { port in
            continuation.yield(port)
            continuation.finish()
        }
        let group = ServiceGroup(configuration: .init(services: [simulator], logger: logger))
        let running = Task { try await group.run() }
        scope.atEnd {
            await group.triggerGracefulShutdown()
            try await running.value
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw SimulatorTestError.didNotStart }
        return SimulatorClient(port: port)
    }

    /// A client to the test's one simulator.
    static var current: SimulatorClient {
        get throws { try FixtureScope.one(SimulatorClient.self, trait: ".withSimulator") }
    }

    /// Clients to the test's two simulators, in the order of `.withSimulators(_:_:)`.
    static var pair: (SimulatorClient, SimulatorClient) {
        get throws { try FixtureScope.pair(SimulatorClient.self, trait: ".withSimulators") }
    }
}

extension Trait where Self == SimulatorFixture {
    /// A simulator answering at once (no time per token).
    static var withSimulator: Self { SimulatorFixture(configurations: [SimulatorConfiguration(tokenMilliseconds: 0)]) }

    static func withSimulator(_ configuration: SimulatorConfiguration) -> Self {
        SimulatorFixture(configurations: [configuration])
    }

    static func withSimulators(_ first: SimulatorConfiguration, _ second: SimulatorConfiguration) -> Self {
        SimulatorFixture(configurations: [first, second])
    }
}

enum SimulatorTestError: Error {
    case didNotStart
    case notJSON(String)
}

/// Sends each request on its own connection, as concurrent worker requests would.
struct SimulatorClient: Sendable {
    let port: Int

    func request(_ method: HTTPRequest.Method, _ path: String, json body: String? = nil) async throws -> TestClient.Response {
        try await TestClient.withClient(host: "127.0.0.1", port: port) { client in
            try await client.execute(
                .init(
                    path,
                    method: method,
                    headers: body == nil ? [:] : [.contentType: "application/json"],
                    body: body.map { ByteBuffer(string: $0) }
                )
            )
        }
    }

    func post(_ path: String, _ body: String) async throws -> TestClient.Response {
        try await request(.post, path, json: body)
    }

    func get(_ path: String) async throws -> TestClient.Response {
        try await request(.get, path)
    }

    func stats() async throws -> [String: Any] {
        try json(await get("/sim/stats"))
    }
}

extension TestClient.Response {
    var text: String {
        body.map { String(buffer: $0) } ?? ""
    }
}

func json(_ response: TestClient.Response) throws -> [String: Any] {
    try json(response.text)
}

func json(_ text: some StringProtocol) throws -> [String: Any] {
    guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
        throw SimulatorTestError.notJSON(String(text))
    }
    return object
}

/// A request body for the OpenAI-compatible endpoint.
func openAIBody(
    _ prompt: String = "Say something",
    model: String = "sim",
    maxTokens: Int? = nil,
    stream: Bool = false,
    seed: Int? = nil
) -> String {
    var fields = [
        #""model":"\#(model)""#,
        #""messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"\#(prompt)"}]"#,
        #""stream":\#(stream)"#,
    ]
    if let maxTokens { fields.append(#""max_tokens":\#(maxTokens)"#) }
    if let seed { fields.append(#""seed":\#(seed)"#) }
    return "{" + fields.joined(separator: ",") + "}"
}

/// A request body for Ollama's `/api/chat`; `stream: nil` leaves Ollama's default (streaming).
func ollamaBody(_ prompt: String = "Say something", model: String = "sim", stream: Bool? = nil, numPredict: Int? = nil) -> String {
    var fields = [
        #""model":"\#(model)""#,
        #""messages":[{"role":"user","content":"\#(prompt)"}]"#,
    ]
    if let stream { fields.append(#""stream":\#(stream)"#) }
    if let numPredict { fields.append(#""options":{"num_predict":\#(numPredict),"temperature":0.2}"#) }
    return "{" + fields.joined(separator: ",") + "}"
}

/// Elapsed wall time of `body`.
func measure(_ body: () async throws -> Void) async rethrows -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    try await body()
    return clock.now - start
}

/// Polls until `condition` holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(3), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}
