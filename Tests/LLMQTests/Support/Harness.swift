import Foundation
import LLMQBackends
import LLMQRedis
import LLMQSimulator
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQTestSupport
import LLMQWorker
import Logging
import Synchronization

/// A simulator running in this process on a free port.
final class RunningSimulator: Sendable {
    let port: Int
    private let task: Task<Void, any Error>

    private init(port: Int, task: Task<Void, any Error>) {
        self.port = port
        self.task = task
    }

    static func start(_ configuration: SimulatorConfiguration = SimulatorConfiguration()) async throws -> RunningSimulator {
        var configuration = configuration
        configuration.port = 0
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let simulator = Simulator(configuration: configuration, logger: Logger(label: "test.sim")) { port in
            continuation.yield(port)
            continuation.finish()
        }
        let task = Task { try await simulator.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("simulator did not start") }
        let running = RunningSimulator(port: port, task: task)
        FixtureScope.atEnd { await running.stop() }
        return running
    }

    var url: String { "http://127.0.0.1:\(port)" }

    func stop() async {
        task.cancel()
        _ = await task.result
    }

    /// `GET /sim/stats`.
    func stats() async throws -> SimulatorStats {
        try await getJSON("/sim/stats")
    }

    func reset() async throws {
        _ = try await request("POST", "/sim/reset", body: Data())
    }

    func setFaults(_ faults: SimulatorFaults) async throws {
        _ = try await request("POST", "/sim/faults", body: try JSONEncoder().encode(faults))
    }

    private func getJSON<T: Decodable>(_ path: String) async throws -> T {
        try JSONDecoder().decode(T.self, from: try await request("GET", path, body: nil))
    }

    private func request(_ method: String, _ path: String, body: Data?) async throws -> Data {
        let client = LLMQHTTPClientForTests.shared
        let response = try await client.execute(.init(
            method: method == "GET" ? .get : .post, url: url + path,
            headers: [("Content-Type", "application/json")], body: body.map(Array.init), timeout: .seconds(10)))
        return Data(response.body)
    }
}

import LLMQHTTP

enum LLMQHTTPClientForTests {
    static let shared = HTTPClient()
}

/// A worker running in this process. Started inside a fixture's scope, it is stopped (gracefully)
/// at the test's end unless the test stopped it.
final class RunningWorker: Sendable {
    let worker: Worker
    private let task: Task<Void, any Error>
    private let stopped = Mutex(false)

    /// Starts a worker; inside a fixture's scope the scope keeps it until the test ends.
    @discardableResult
    static func start(_ configuration: WorkerConfiguration) throws -> RunningWorker {
        try RunningWorker(configuration)
    }

    private init(_ configuration: WorkerConfiguration) throws {
        var logger = Logger(label: "test.worker")
        logger.logLevel = .warning
        worker = try Worker(configuration: configuration, logger: logger)
        let worker = self.worker
        task = Task { try await worker.run() }
        FixtureScope.atEnd { [self] in
            if !stopped.withLock({ $0 }) { await stop() }
        }
    }

    /// Graceful stop: stop reading, finish what is in flight.
    func stop() async {
        stopped.withLock { $0 = true }
        worker.stop()
        _ = await task.result
    }

    /// Hard stop: cancel everything in flight.
    func cancel() async {
        stopped.withLock { $0 = true }
        task.cancel()
        _ = await task.result
    }
}

extension BackendConfiguration {
    /// A llama-server backend of a pool (`backends`), by name.
    static func named(_ name: String, _ url: String, weight: Double? = nil, slots: Int? = nil, models: [String]? = nil) -> BackendConfiguration {
        var backend = BackendConfiguration(kind: .llamaCpp, endpoint: url)
        backend.name = name
        backend.weight = weight
        backend.slots = slots
        backend.models = models
        return backend
    }
}

extension WorkerConfiguration {
    /// Takes over entries idle on other consumers for `minIdle`, looking for them every `interval`.
    mutating func claimIdle(after minIdle: Duration, every interval: Duration) {
        recovery.claimMinIdle = minIdle
        recovery.claimInterval = interval
    }
}

/// A worker's configuration for the test's Redis and `simulator` (a llama-server), quick to read,
/// retry and stop.
func workerConfiguration(
    redis: RedisServer, simulator: RunningSimulator, consumer: String = "test-\(UUID().uuidString.prefix(6))", concurrency: Int = 4
) -> WorkerConfiguration {
    workerConfiguration(redis: redis, backend: BackendConfiguration(kind: .llamaCpp, endpoint: simulator.url), consumer: consumer, concurrency: concurrency)
}

/// A worker's configuration for the test's Redis and a pool of `backends` (`backends`, which
/// takes the place of `backend`).
func workerConfiguration(redis: RedisServer, pool backends: [BackendConfiguration], concurrency: Int = 4) -> WorkerConfiguration {
    var configuration = workerConfiguration(redis: redis, backend: BackendConfiguration(kind: .llamaCpp, endpoint: backends[0].endpoint), concurrency: concurrency)
    configuration.backends = backends
    return configuration
}

func workerConfiguration(
    redis: RedisServer, backend: BackendConfiguration, consumer: String = "test-\(UUID().uuidString.prefix(6))",
    concurrency: Int = 4
) -> WorkerConfiguration {
    var configuration = WorkerConfiguration(consumer: consumer, backend: backend)
    configuration.redis = redis.configuration
    configuration.concurrency = concurrency
    configuration.readBlock = .milliseconds(200)
    configuration.shutdownGrace = .seconds(10)
    configuration.retry.initialBackoff = .milliseconds(20)
    configuration.retry.maxBackoff = .milliseconds(200)
    return configuration
}

/// Reads a whole reply stream as dictionaries.
func readReplies(_ client: RedisClient, stream: String = "llmq:replies") async throws -> [[String: String]] {
    let reply = try await client.send("XRANGE", stream, "-", "+")
    return (reply.array ?? []).map { item in
        var fields: [String: String] = [:]
        for (name, value) in item.array?[1].pairs ?? [] {
            fields[name.string ?? ""] = value.string ?? ""
        }
        return fields
    }
}

/// Waits until the reply stream holds `count` replies (or fails after `timeout`).
func waitForReplies(_ client: RedisClient, count: Int, stream: String = "llmq:replies", timeout: Duration = .seconds(30)) async throws -> [[String: String]] {
    let deadline = ContinuousClock.now + timeout
    while true {
        let replies = try await readReplies(client, stream: stream)
        if replies.count >= count { return replies }
        if ContinuousClock.now > deadline {
            throw TestFailure("only \(replies.count) of \(count) replies on \(stream) after \(timeout)")
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// Publishes a request with the given fields; returns its entry ID.
@discardableResult
func publish(_ client: RedisClient, _ fields: [(String, String)], stream: String = "llmq:requests") async throws -> String {
    var command = RedisCommand("XADD", stream, "*")
    for (name, value) in fields {
        command.append(name)
        command.append(value)
    }
    return try await client.send(command).string ?? ""
}

/// Publishes `count` requests, the prompt of each `prompt` followed by its number ("job 0",
/// "job 1", ...), then `max_tokens` and `fields` when given, and with `ids` the id `<ids><number>`;
/// returns their entry IDs.
@discardableResult
func publish(
    _ client: RedisClient, count: Int, prompt: String, maxTokens: Int? = nil, _ fields: [(String, String)] = [], ids: String? = nil,
    stream: String = "llmq:requests"
) async throws -> [String] {
    var entries: [String] = []
    for index in 0..<count {
        var request = [("prompt", prompt + String(index))]
        if let maxTokens { request.append(("max_tokens", String(maxTokens))) }
        request += fields
        if let ids { request.append(("id", ids + String(index))) }
        entries.append(try await publish(client, request, stream: stream))
    }
    return entries
}

/// Hands the next `count` new entries of the request stream to a consumer named "ghost" that
/// then vanishes, as a crashed worker leaves them: pending, owned by no live worker. With
/// `deliveries`, as if that had happened that many times (the group's delivery count).
func abandonNextEntries(_ client: RedisClient, count: Int = 1, deliveries: Int? = nil) async throws {
    let read = try await client.send(
        "XREADGROUP", "GROUP", "llmq", "ghost", "COUNT", String(count), "STREAMS", "llmq:requests", ">")
    let entries = read.array?.first?.array?.last?.array ?? []
    guard let deliveries else { return }
    for entry in entries {
        guard let id = entry.array?.first?.string else { continue }
        _ = try await client.send("XCLAIM", "llmq:requests", "llmq", "ghost", "0", id, "RETRYCOUNT", String(deliveries))
    }
}
