import Foundation
import LLMQBackends
@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
@testable import LLMQRedis
import LLMQSimulator
@testable import LLMQWorker
import Testing

@Suite("Cluster mode configuration")
struct ClusterConfigurationTests {
    private let backend = ["LLMQ_BACKEND_TYPE": "llama-cpp", "LLMQ_BACKEND_ENDPOINT": "http://127.0.0.1:8080"]

    private func load(_ environment: [String: String]) throws -> WorkerConfiguration {
        try ConfigurationLoader.load(file: nil, environment: backend.merging(environment) { $1 }, flags: [], defaultConsumer: "host-1")
    }

    private func refusal(_ environment: [String: String]) -> String {
        do {
            _ = try load(environment)
            return "(loaded)"
        } catch {
            return "\(error)"
        }
    }

    @Test("redis.cluster: keys default to the hash tag {llmq}, seeds from the URL and redis.nodes, queues named by the rule share the tag")
    func clusterDefaults() throws {
        let configuration = try load([
            "LLMQ_REDIS_URL": "redis://10.0.0.1:7000", "LLMQ_REDIS_CLUSTER": "true",
            "LLMQ_REDIS_NODES": "10.0.0.2:7001,[::1]:7002", "LLMQ_QUEUES": "HumanAI",
        ])
        #expect(configuration.redis.cluster)
        #expect(configuration.redis.host == "10.0.0.1" && configuration.redis.port == 7000)
        #expect(configuration.redis.clusterNodes == [RedisNode(host: "10.0.0.2", port: 7001), RedisNode(host: "::1", port: 7002)])
        let streams = configuration.streams
        #expect([streams.requests, streams.replies, streams.dead, streams.answered, streams.stats] == [
            "{llmq}:requests", "{llmq}:replies", "{llmq}:dead", "{llmq}:answered", "{llmq}:stats",
        ])
        #expect(streams.replyToPrefix == "{llmq}:")
        #expect(configuration.queues.map(\.stream) == ["{llmq}:requests:HumanAI"])
        // Without cluster mode nothing changes.
        let single = try load([:])
        #expect(single.streams.requests == "llmq:requests" && !single.redis.cluster)
    }

    @Test("A queue with a hash tag of its own is answered on keys with its tag: another slot, maybe another master")
    func queueInItsOwnSlot() throws {
        let configuration = try load([
            "LLMQ_REDIS_CLUSTER": "true", "LLMQ_QUEUES": "a,b", "LLMQ_QUEUES_B_STREAM": "{b}:requests",
        ])
        let b = configuration.streams.serving("{b}:requests")
        #expect([b.requests, b.replies, b.dead, b.stats, b.replyToPrefix] == ["{b}:requests", "{b}:replies", "{b}:dead", "{b}:stats", "{b}:"])
        let a = configuration.streams.serving("{llmq}:requests:a")
        #expect(a.replies == "{llmq}:replies")
        #expect(b.clusterProblem() == nil && a.clusterProblem() == nil)
        var split = b
        split.dead = "{llmq}:dead"
        #expect(split.clusterProblem()?.key == "streams.dead")
        #expect(configuration.streams.replyToProblem("{b}:mine", requests: "{b}:requests") == nil)
        #expect(configuration.streams.replyToProblem("{llmq}:mine", requests: "{b}:requests")?.contains("another Redis Cluster slot") == true)
        #expect(try load([:]).streams.replyToProblem("{x}:mine", requests: "llmq:requests") == nil, "only in cluster mode")
    }

    @Test("Keys that cannot share a slot are refused with one line naming the key")
    func refusals() {
        #expect(refusal(["LLMQ_REDIS_CLUSTER": "true", "LLMQ_STREAMS_REQUESTS": "jobs"]).hasPrefix(
            "streams.requests (from environment LLMQ_STREAMS_REQUESTS): in cluster mode a request stream needs a hash tag"))
        let mixed = refusal(["LLMQ_REDIS_CLUSTER": "true", "LLMQ_STREAMS_REPLIES": "llmq:replies"])
        #expect(mixed.hasPrefix("streams.replies (from environment LLMQ_STREAMS_REPLIES): in cluster mode a queue's keys must share one slot: {llmq}:requests is in slot"), "\(mixed)")
        #expect(mixed.contains("streams.replies llmq:replies"))
        #expect(refusal(["LLMQ_REDIS_CLUSTER": "true", "LLMQ_QUEUES": "a", "LLMQ_QUEUES_A_STREAM": "plain"]).hasPrefix(
            "queues.a.stream (from environment LLMQ_QUEUES_A_STREAM): in cluster mode a request stream needs a hash tag"))
        #expect(refusal(["LLMQ_REDIS_NODES": "10.0.0.2:7001"]).contains("redis.cluster is not true"))
        #expect(refusal(["LLMQ_REDIS_CLUSTER": "true", "LLMQ_REDIS_URL": "redis://10.0.0.1:7000/2"]).contains("only database 0"))
        #expect(refusal(["LLMQ_REDIS_CLUSTER": "true", "LLMQ_REDIS_NODES": "nohost"]).contains("\"nohost\" is not host:port"))
    }

    @Test("llmq worker refuses such a configuration at startup: one line on stderr, exit 2")
    func workerRefuses() throws {
        let result = try runLLMQ(["worker"], environment: backend.merging([
            "LLMQ_REDIS_URL": "redis://127.0.0.1:1", "LLMQ_REDIS_CLUSTER": "true", "LLMQ_STREAMS_DEAD": "dead",
        ]) { $1 })
        #expect(result.status == 2)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("llmq: invalid configuration: streams.dead (from environment LLMQ_STREAMS_DEAD): in cluster mode"), "\(result.stderr)")
        #expect(result.stderr.contains("streams.dead dead in slot"), "\(result.stderr)")
    }
}

@Suite("llmq status and publish against a real cluster", .serialized, .timeLimit(.minutes(3)), .withRedisCluster)
struct ClusterCommandTests {
    @Test(
        "llmq publish --wait and --stream, llmq bench and bench --stream, and llmq status, with LLMQ_REDIS_CLUSTER=true, on queues in their own slots",
        .withSimulator(.init(slots: 4, tokenMilliseconds: 1)))
    func publishAndStatus() async throws {
        let cluster = try RedisClusterFixture.current.cluster
        let tags = try await cluster.tagsOnDifferentMasters(2)
        let simulator = try SimulatorFixture.current
        var configuration = WorkerConfiguration(consumer: "cluster-cli", backend: BackendConfiguration(kind: .llamaCpp, endpoint: simulator.url))
        configuration.redis = cluster.configuration
        configuration.streams = .clusterDefaults
        configuration.queues = [.init(name: "a", stream: "{\(tags[0])}:requests"), .init(name: "b", stream: "{\(tags[1])}:requests")]
        configuration.readBlock = .milliseconds(200)
        let worker = try RunningWorker.start(configuration)
        let environment = [
            "LLMQ_REDIS_URL": cluster.url, "LLMQ_REDIS_CLUSTER": "true", "LLMQ_QUEUES": "a,b",
            "LLMQ_QUEUES_A_STREAM": "{\(tags[0])}:requests", "LLMQ_QUEUES_B_STREAM": "{\(tags[1])}:requests",
        ]
        let published = try await runProgram(
            try llmqExecutable().path, ["publish", "--queue", "b", "--prompt", "hello", "--max-tokens", "4", "--wait", "--timeout", "30"],
            environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LLMQ_") }.merging(environment) { $1 })
        #expect(published.status == 0, "\(published.output) \(published.error)")
        #expect(published.output.contains("status: ok") && published.output.contains("queue: b"), "\(published.output)")
        let processEnvironment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LLMQ_") }.merging(environment) { $1 }
        let streamed = try await runProgram(
            try llmqExecutable().path, ["publish", "--queue", "a", "--prompt", "hello", "--max-tokens", "6", "--stream", "--timeout", "30"],
            environment: processEnvironment)
        #expect(streamed.status == 0 && streamed.output.contains("finish_reason: length"), "\(streamed.output) \(streamed.error)")
        for arguments in [["--queue", "a", "--requests", "40"], ["--queue", "b", "--requests", "20", "--stream", "--concurrency", "5"]] {
            let bench = try await runProgram(
                try llmqExecutable().path, ["bench", "--max-tokens", "4", "--timeout", "60"] + arguments, environment: processEnvironment)
            #expect(bench.status == 0, "llmq bench \(arguments): \(bench.output) \(bench.error)")
        }
        let status = try await runProgram(try llmqExecutable().path, ["status"], environment: processEnvironment)
        await worker.stop()
        await simulator.stop()
        #expect(status.status == 0, "\(status.error)")
        // One publish, 20 bench requests on b; one streamed publish and 40 bench requests on a.
        #expect(status.output.contains("replies counted in {\(tags[1])}:stats: ok 21, error 0"), "\(status.output)")
        #expect(status.output.contains("replies {\(tags[1])}:replies: 1 entries"), "\(status.output)")
        #expect(status.output.contains("replies counted in {\(tags[0])}:stats: ok 41, error 0"), "queue a has keys of its own: \(status.output)")
    }
}

@Suite("Cluster mode: reply_to and stream_to must share the request stream's slot")
struct ClusterSlotParsingTests {
    @Test("A prefix without a hash tag: keys in another slot get invalid_request naming the slot, keys in the same slot pass")
    func slotCheck() {
        let parser = RequestParser(
            limits: WorkerConfiguration.Limits(), replyToPrefix: "", replies: "{llmq}:replies", clusterSlotOf: "{llmq}:requests")
        func parse(_ fields: [(String, String)]) -> Result<ParsedRequest, RequestRejection> {
            parser.parse(StreamEntry(id: "1-0", fields: ([("prompt", "hi")] + fields).map { (Array($0.0.utf8), Array($0.1.utf8)) }), now: 2)
        }
        for (field, key) in [("reply_to", "other:replies"), ("stream_to", "{other}:chunks")] {
            guard case .failure(let rejection) = parse([(field, key)]) else {
                Issue.record("\(field) \(key) must be refused")
                continue
            }
            #expect(rejection.code == .invalidRequest && rejection.message.contains("another Redis Cluster slot"), "\(rejection.message)")
        }
        guard case .success(let request) = parse([("reply_to", "{llmq}:mine"), ("stream_to", "{llmq}:chunks")]) else {
            Issue.record("keys with the request stream's tag must pass")
            return
        }
        #expect(request.replyTo == "{llmq}:mine" && request.stream == .named("{llmq}:chunks"))
    }
}
