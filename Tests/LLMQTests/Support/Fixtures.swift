import LLMQConfiguration
import LLMQRedis
import LLMQSimulator
import LLMQWorker

// Scoped fixtures: each starts what a test needs and stops it when the body ends, thrown or
// not, so a test says what it needs in one line and never leaks a process.

/// A redis-server of the test's own on a free port, and a client on it. The client is shut
/// down, and the server killed, when the body ends.
@discardableResult
func withRedis<Result>(
    appendOnly: Bool = false, options: [String] = [], _ body: (RedisServer, RedisClient) async throws -> Result
) async throws -> Result {
    let redis = try await RedisServer.start(appendOnly: appendOnly, options: options)
    let client = RedisClient(configuration: redis.configuration)
    defer { client.shutdown() }
    return try await body(redis, client)
}

/// `llmq sim` in this process on a free port, stopped when the body ends.
@discardableResult
func withSimulator<Result>(
    _ configuration: SimulatorConfiguration = SimulatorConfiguration(), _ body: (RunningSimulator) async throws -> Result
) async throws -> Result {
    let sim = try await RunningSimulator.start(configuration)
    do {
        let result = try await body(sim)
        await sim.stop()
        return result
    } catch {
        await sim.stop()
        throw error
    }
}

/// `count` workers in this process over one configuration (as `docker compose --scale` runs
/// them), each under a consumer name of its own; stopped gracefully when the body ends.
@discardableResult
func withWorkers<Result>(
    _ configuration: WorkerConfiguration, count: Int = 1, _ body: ([RunningWorker]) async throws -> Result
) async throws -> Result {
    var workers: [RunningWorker] = []
    for index in 0..<count {
        var own = configuration
        if count > 1 { own.consumer = "\(configuration.consumer)-\(index)" }
        workers.append(try RunningWorker(own))
    }
    do {
        let result = try await body(workers)
        for worker in workers { await worker.stop() }
        return result
    } catch {
        for worker in workers { await worker.stop() }
        throw error
    }
}
