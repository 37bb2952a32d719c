import Foundation
import Glibc
import LLMQRedis
import LLMQSimulator
import Testing

/// docker-compose.yml run as local processes: a compose change that would crash-loop a
/// container (a value the worker refuses, a URL to the wrong service or port, a redis-server
/// option that does not start) fails here, although no Docker engine runs the tests.
@Suite("Compose: docker-compose.yml's services as local processes", .serialized)
struct ComposeTests {
    @Test("worker processes with the worker service's environment answer requests published with redis-cli", .timeLimit(.minutes(2)))
    func workersFromComposeFile() async throws {
        let compose = try await ComposeFile.load()
        let redisService = try compose.service("redis")
        let llamaService = try compose.service("llamacpp")
        let workerService = try compose.service("worker")

        // redis: the service's own command, on loopback and a temporary directory.
        let command = try #require(redisService.command, "the redis service has no command")
        #expect(command.first == "redis-server", "the redis service's command should start with redis-server: \(command)")
        let redis = try await RedisServer.start(options: Array(command.dropFirst()))
        let client = RedisClient(configuration: redis.configuration)
        defer { client.shutdown() }

        // llamacpp: the simulator, with as many slots as the service's --parallel.
        var simulatorConfiguration = SimulatorConfiguration()
        simulatorConfiguration.slots = Int(llamaService.commandOption("--parallel") ?? "") ?? 4
        let simulator = try await RunningSimulator.start(simulatorConfiguration)

        let standIns = [
            ComposeStandIn(service: "redis", containerPort: Int(redisService.commandOption("--port") ?? "") ?? 6379, port: redis.port),
            ComposeStandIn(service: "llamacpp", containerPort: Int(llamaService.commandOption("--port") ?? "") ?? 8080, port: simulator.port),
        ]
        for dependency in workerService.dependsOn {
            #expect(standIns.contains { $0.service == dependency }, "the worker depends on \(dependency), which this test does not start")
        }
        let environment = try workerService.localEnvironment(standIns: standIns, services: Array(compose.services.keys))
        // The image's entrypoint is `llmq`; WorkerProcess runs `llmq worker --consumer NAME`, the
        // name standing in for each container's host name (the worker's default consumer name).
        #expect(workerService.command == ["worker"], "WorkerProcess runs `llmq worker`; teach this test the new command")

        // Each container listens for metrics on its own port 9464; here each worker gets a
        // loopback port of its own in its place.
        let containerMetricsPort = try #require(environment["LLMQ_METRICS_PORT"], "the worker service exports no metrics port")
        let metricsPorts = try (1...3).map { _ in try freePort() }
        let workers = try (1...3).map { index in
            var environment = environment
            environment["LLMQ_METRICS_PORT"] = String(metricsPorts[index - 1])
            environment["LLMQ_METRICS_HOST"] = "127.0.0.1"
            return try WorkerProcess.start(name: "compose-worker-\(index)", environment: environment)
        }
        let requests = 9
        for index in 0..<requests {
            let published = try await runProgram(
                "redis-cli", ["-p", String(redis.port), "XADD", "llmq:requests", "*", "prompt", "compose \(index)", "max_tokens", "8", "id", "c\(index)"])
            #expect(published.status == 0 && published.output.contains("-"), "redis-cli XADD: \(published.output) \(published.error)")
        }
        let replies = try await waitForReplies(client, count: requests, workers: workers)
        #expect(Set(replies.compactMap { $0["id"] }) == Set((0..<requests).map { "c\($0)" }))
        for reply in replies {
            #expect(reply["status"] == "ok", "\(reply)")
            #expect(reply["completion_tokens"] == "8", "\(reply)")
        }
        // `--scale worker=3` with one configuration: together the workers (3 x LLMQ_CONCURRENCY)
        // never send the server more than its --parallel slots, which they share through Redis.
        let burst = 3 * (Int(environment["LLMQ_CONCURRENCY"] ?? "") ?? 4) * 2
        for index in 0..<burst {
            try await publish(client, [("prompt", "burst \(index)"), ("max_tokens", "20"), ("id", "b\(index)")])
        }
        _ = try await waitForReplies(client, count: requests + burst, workers: workers)
        let stats = try await simulator.stats()
        #expect(stats.maxQueued == 0 && stats.maxInFlight == simulatorConfiguration.slots, "one configuration over-admitted: \(stats)")
        for worker in workers {
            #expect(worker.isRunning, "\(worker.name) exited:\n\(worker.output.suffix(2000))")
        }
        // The service's healthcheck, run as Docker runs it inside each container.
        let healthcheck = try #require(workerService.healthcheck, "the worker service has no healthcheck")
        #expect(Array(healthcheck.prefix(2)) == ["CMD", "llmq"], "the healthcheck runs llmq itself: \(healthcheck)")
        #expect(containerMetricsPort == "9464")
        for (worker, port) in zip(workers, metricsPorts) {
            var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LLMQ_") }
            environment.merge(worker.environment) { $1 }
            let check = try await runProgram(try llmqExecutable().path, Array(healthcheck.dropFirst(2)), environment: environment)
            #expect(check.status == 0, "healthcheck of \(worker.name): \(check.output) \(check.error)")
            #expect(check.output.contains(":\(port)/healthz: 200"), "\(check.output)")
        }

        // `docker compose stop`: SIGTERM, and a clean exit well within stop_grace_period.
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers {
            #expect(await worker.waitForExit(timeout: .seconds(30)) == 0, "\(worker.name):\n\(worker.output.suffix(2000))")
        }
        await simulator.stop()
        await redis.kill()
    }
}
