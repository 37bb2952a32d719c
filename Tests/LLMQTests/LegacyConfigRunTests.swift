import Foundation
import Glibc
import LLMQRedis
import LLMQSimulator
import LLMQTestSupport
import Testing

/// The worker config files users already have (`config/legacy-*.json`) start workers as given,
/// against `llmq sim` standing in for the Ollama or llama-server they name.
@Suite("Legacy config files run unchanged", .serialized, .withRedis, .withSimulator)
struct LegacyConfigRunTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var file: String
        /// The consumer name the file gives (`workerId`); nil: the default, host-pid.
        var workerID: String?
        var stream: String
        var needsModel: Bool
        var description: String?
        var testDescription: String { file }
    }

    static let cases: [Case] = [
        Case(file: "config/legacy-primary-worker.json", workerID: "primary-worker", stream: "llmq:requests:HumanAI", needsModel: true),
        Case(
            file: "config/legacy-worker-llamacpp-1.json", workerID: "worker-llamacpp-1", stream: "llmq:requests:HumanAI", needsModel: false,
            description: "Llama.cpp with parallel processing"),
        Case(
            file: "config/legacy-worker-ollama-1.json", workerID: "worker-ollama-1", stream: "llmq:requests:HumanAI", needsModel: true,
            description: "Ollama fallback/testing"),
        Case(file: "config/legacy-model-loaded.json", workerID: nil, stream: "llmq:requests", needsModel: false),
    ]

    @Test("A worker started from the file serves its queue, with its name and backend", arguments: cases)
    func runs(_ legacy: Case) async throws {
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        // The file's endpoint, path and all, with the simulator's port in place of the real server's.
        let file = packageRoot.appendingPathComponent(legacy.file)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        var endpoint = try #require(URLComponents(string: (object["backend"] as? [String: Any])?["endpoint"] as? String ?? ""))
        endpoint.port = sim.port
        let worker = try WorkerProcess.start(
            name: "legacy", environment: [
                "LLMQ_CONFIG": file.path, "LLMQ_REDIS_URL": redis.url, "LLMQ_BACKEND_ENDPOINT": endpoint.string ?? "",
                "LLMQ_READ_BLOCK_MS": "200",
            ], arguments: ["worker"])

        try await publish(client, [("prompt", "hello"), ("max_tokens", "8"), ("model", "llama3.2:1b"), ("id", "with-model")], stream: legacy.stream)
        try await publish(client, [("prompt", "hello"), ("max_tokens", "8"), ("id", "no-model")], stream: legacy.stream)
        try await publish(client, [("prompt", "not for this worker")], stream: "llmq:requests:GodMode")
        let replies = try await waitForReplies(client, count: 2, workers: [worker])
        let byID = Dictionary(uniqueKeysWithValues: replies.map { ($0["id"] ?? "", $0) })
        #expect(byID["with-model"]?["status"] == "ok", "\(replies)")
        if legacy.needsModel {
            #expect(byID["no-model"]?["error_code"] == "invalid_request", "\(replies)")
            #expect(byID["no-model"]?["error"]?.contains("names no model") == true)
        } else {
            #expect(byID["no-model"]?["status"] == "ok", "\(replies)")
        }
        if let workerID = legacy.workerID {
            #expect(replies.allSatisfy { $0["consumer"] == workerID }, "\(replies.map { $0["consumer"] ?? "" })")
        }
        if let description = legacy.description {
            #expect(worker.output.contains(description), "the startup log names the backend: \(worker.output.prefix(600))")
        }
        // pollGodMode: false: nobody reads that queue.
        try await Task.sleep(for: .milliseconds(400))
        #expect(try await client.send("XLEN", "llmq:requests:GodMode").int == 1)
        #expect(try await readReplies(client).count == 2)
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0, "\(worker.output.suffix(1000))")
    }
}
