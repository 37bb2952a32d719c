import LLMQRedis
import LLMQSimulator
import LLMQTestSupport
import Testing

// The scoped fixtures of the integration tests. A test names what it needs among its traits,
// reads it at function scope, and everything is stopped when it ends:
//
//     @Test("...", .withRedis, .withSimulator(SimulatorConfiguration(slots: 8)))
//     func something() async throws {
//         let (redis, client) = try RedisFixture.current
//         let sim = try SimulatorFixture.current
//         let worker = try RunningWorker.start(workerConfiguration(redis: redis, simulator: sim))
//         ...
//     }
//
// Workers, worker processes, simulators and `llmq sim` processes that a test starts inside a
// fixture's scope are stopped with it too (see `FixtureScope.atEnd`), after whatever the test
// stopped itself: what a test must have stopped before it checks something, it stops itself.

/// `.withRedis`: a redis-server of the test's own on a free port, and a client to it.
struct RedisFixture: ScopedFixture {
    var appendOnly = false
    var options: [String] = []

    func start(in scope: FixtureScope) async throws {
        let server = try await RedisServer.start(appendOnly: appendOnly, options: options)
        scope.atEnd { await server.kill() }
        scope.store((server, client(of: server.configuration, in: scope)))
    }

    /// The test's redis-server and the client to it.
    static var current: (server: RedisServer, client: RedisClient) {
        get throws { try FixtureScope.value((RedisServer, RedisClient).self, trait: ".withRedis") }
    }
}

/// A client that the scope shuts down at the end.
private func client(of configuration: RedisConfiguration, in scope: FixtureScope) -> RedisClient {
    let client = RedisClient(configuration: configuration)
    scope.atEnd { client.shutdown() }
    return client
}

extension Trait where Self == RedisFixture {
    static var withRedis: Self { RedisFixture() }

    /// - Parameters:
    ///   - appendOnly: With the append-only file on (fsync always), to survive a kill -9.
    ///   - options: More `redis-server` options (see ``RedisServer/start(appendOnly:options:)``).
    static func withRedis(appendOnly: Bool = false, options: [String] = []) -> Self {
        RedisFixture(appendOnly: appendOnly, options: options)
    }
}

/// `.withFaultProxy`: a ``FaultProxy`` in front of the test's redis-server (`.withRedis`, named
/// before it), stopped at the end.
struct FaultProxyFixture: ScopedFixture {
    func start(in scope: FixtureScope) async throws {
        let proxy = try FaultProxy.start(upstreamPort: try RedisFixture.current.server.port)
        scope.atEnd { proxy.stop() }
        scope.store(proxy)
    }

    /// The test's proxy.
    static var current: FaultProxy {
        get throws { try FixtureScope.value(FaultProxy.self, trait: ".withFaultProxy") }
    }
}

extension Trait where Self == FaultProxyFixture {
    static var withFaultProxy: Self { FaultProxyFixture() }
}

extension FaultProxy {
    /// Where a worker connects to go through the proxy.
    var configuration: RedisConfiguration { RedisConfiguration(host: "127.0.0.1", port: port) }
}

/// `.withSimulator(...)`: simulators running in this process, each on a free port.
struct SimulatorFixture: ScopedFixture {
    let configurations: [SimulatorConfiguration]

    func start(in scope: FixtureScope) async throws {
        var simulators: [RunningSimulator] = []
        // Each is stopped with the scope (`RunningSimulator.start` registers it).
        for configuration in configurations { simulators.append(try await RunningSimulator.start(configuration)) }
        scope.store(simulators)
    }

    /// The test's one simulator.
    static var current: RunningSimulator {
        get throws { try FixtureScope.one(RunningSimulator.self, trait: ".withSimulator") }
    }

    /// The test's two simulators, in the order of `.withSimulators(_:_:)`.
    static var pair: (RunningSimulator, RunningSimulator) {
        get throws { try FixtureScope.pair(RunningSimulator.self, trait: ".withSimulators") }
    }
}

extension Trait where Self == SimulatorFixture {
    static var withSimulator: Self { SimulatorFixture(configurations: [SimulatorConfiguration()]) }

    static func withSimulator(_ configuration: SimulatorConfiguration) -> Self {
        SimulatorFixture(configurations: [configuration])
    }

    /// Two simulators, say two backends of a pool: `let (a, b) = try SimulatorFixture.pair`.
    static func withSimulators(_ first: SimulatorConfiguration, _ second: SimulatorConfiguration) -> Self {
        SimulatorFixture(configurations: [first, second])
    }
}

/// `.withRedisCluster`: a real Redis Cluster of six nodes (``RedisCluster``), stopped node by
/// node at the end, and a cluster client to it.
struct RedisClusterFixture: ScopedFixture {
    var nodeTimeout = 2000

    func start(in scope: FixtureScope) async throws {
        let cluster = try await RedisCluster.start(nodeTimeout: nodeTimeout)
        scope.atEnd { await cluster.stop() }
        scope.store((cluster, client(of: cluster.configuration, in: scope)))
    }

    /// The test's cluster and a client to it.
    static var current: (cluster: RedisCluster, client: RedisClient) {
        get throws { try FixtureScope.value((RedisCluster, RedisClient).self, trait: ".withRedisCluster") }
    }
}

extension Trait where Self == RedisClusterFixture {
    static var withRedisCluster: Self { RedisClusterFixture() }

    /// - Parameter nodeTimeout: `cluster-node-timeout` in milliseconds (see ``RedisCluster/start(nodeTimeout:)``).
    static func withRedisCluster(nodeTimeout: Int = 2000) -> Self { RedisClusterFixture(nodeTimeout: nodeTimeout) }
}
