import Foundation
import LLMQBackends
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQTestSupport
import LLMQWorker
import Testing

/// The keys older llmq config files use (`workerId`, `backend.modelLoaded`, `polling`), the
/// `queues` section, and `llmq worker --print-config`.
@Suite("Configuration: legacy keys and queues")
struct LegacyConfigurationTests {
    private func writeConfig(_ json: String) throws -> String { try temporaryFile(json, prefix: "llmq-config") }

    private func load(_ file: String?, _ environment: [String: String] = [:], flags: [ConfigurationLoader.Flag] = []) throws -> WorkerConfiguration {
        try ConfigurationLoader.load(file: file, environment: environment, flags: flags, defaultConsumer: "host-1")
    }

    /// The one error line for a configuration that must be refused.
    private func refusal(_ file: String?, _ environment: [String: String] = [:], flags: [ConfigurationLoader.Flag] = []) -> String {
        do {
            _ = try load(file, environment, flags: flags)
            return "(loaded)"
        } catch {
            return "\(error)"
        }
    }

    @Test(
        "the legacy worker files load as given: consumer, backend, HumanAI served, GodMode not",
        arguments: [
            ("legacy-primary-worker.json", "primary-worker", BackendConfiguration.Kind.ollama, "http://127.0.0.1:11434/v1/chat/completions", String?.none),
            ("legacy-worker-llamacpp-1.json", "worker-llamacpp-1", .llamaCpp, "http://127.0.0.1:8080/v1/chat/completions", "Llama.cpp with parallel processing"),
            ("legacy-worker-ollama-1.json", "worker-ollama-1", .ollama, "http://127.0.0.1:11434/v1/chat/completions", "Ollama fallback/testing"),
        ])
    func legacyWorkerFiles(file: String, consumer: String, kind: BackendConfiguration.Kind, endpoint: String, description: String?) throws {
        let configuration = try load(configDirectory.appendingPathComponent(file).path)
        #expect(configuration.consumer == consumer)
        #expect(configuration.backend.kind == kind)
        #expect(configuration.backend.endpoint == endpoint)
        #expect(configuration.backend.model == nil, "no model: each request names its own")
        #expect(configuration.backend.description == description)
        #expect(configuration.queues == [WorkerConfiguration.Queue(name: "HumanAI", stream: "llmq:requests:HumanAI")])
        #expect(!configuration.effectiveQueues.contains { $0.name == "GodMode" })
        #expect(try configuration.backend.resolvedEndpoint().api == .openAIChat)
    }

    @Test("backend.modelLoaded is the model name; with no polling the default queue is served")
    func modelLoaded() throws {
        let configuration = try load(configDirectory.appendingPathComponent("legacy-model-loaded.json").path)
        #expect(configuration.consumer == "host-1")
        #expect(configuration.backend.kind == .llamaCpp)
        #expect(configuration.backend.endpoint == "http://127.0.0.1:8080/v1/chat/completions")
        #expect(configuration.backend.model == "Qwen2.5-7B-Instruct-Q4_K_M")
        #expect(configuration.backend.description == nil)
        #expect(configuration.queues.isEmpty)
        #expect(configuration.effectiveQueues.map(\.stream) == ["llmq:requests"])
    }

    @Test("a queues section sets stream, priority, weight and minShare, ordered by priority then name")
    func queuesSection() throws {
        let file = try writeConfig("""
            {"streams": {"requests": "jobs"},
             "queues": {"batch": {"weight": 3, "minShare": 0.1},
                        "interactive": {"priority": 10, "stream": "jobs:fast"},
                        "bulk": {"weight": 1},
                        "Off": {"priority": 99}},
             "polling": {"pollHumanAI": true, "pollOff": false}}
            """)
        let configuration = try load(file)
        #expect(configuration.queues.map(\.name) == ["interactive", "HumanAI", "batch", "bulk"])
        let byName = Dictionary(uniqueKeysWithValues: configuration.queues.map { ($0.name, $0) })
        #expect(byName["interactive"] == .init(name: "interactive", stream: "jobs:fast", priority: 10))
        #expect(byName["batch"] == .init(name: "batch", stream: "jobs:batch", weight: 3, minimumShare: 0.1))
        #expect(byName["HumanAI"]?.stream == "jobs:HumanAI")
        #expect(byName["Off"] == nil, "pollOff: false keeps a queue in queues from being served")
    }

    @Test("LLMQ_QUEUES adds queues, and LLMQ_QUEUES_<NAME>_* override the file's queue keys")
    func queuesFromEnvironment() throws {
        let file = try writeConfig(#"{"queues": {"HumanAI": {"priority": 1}}}"#)
        let configuration = try load(file, ["LLMQ_QUEUES": "batch, GodMode", "LLMQ_QUEUES_HUMAN_AI_PRIORITY": "5", "LLMQ_QUEUES_BATCH_WEIGHT": "2"])
        #expect(configuration.queues.map(\.name) == ["HumanAI", "GodMode", "batch"])
        #expect(configuration.queues.first?.priority == 5)
        #expect(configuration.queues.last?.weight == 2)
    }

    @Test(
        "conflicts and bad values are one line naming the key and its source",
        arguments: [
            (#"{"workerId": "a", "consumer": "b"}"#, [String: String](), #"workerId (from config file PATH): "a" conflicts with consumer "b" (from config file PATH)"#),
            (#"{"backend": {"model": "m1", "modelLoaded": "m2"}}"#, [:], #"backend.modelLoaded (from config file PATH): "m2" conflicts with backend.model "m1""#),
            (#"{"queues": {"x": {"weight": 0}}}"#, [:], "queues.x.weight (from config file PATH): 0 is out of range 1...1000000"),
            (#"{"queues": {"x": {"minShare": 1.5}}}"#, [:], "queues.x.minShare (from config file PATH): 1.5 is out of range 0.0...1.0"),
            (#"{"queues": {"x": {"priority": "high"}}}"#, [:], #"queues.x.priority (from config file PATH): expected a whole number, got "high""#),
            (#"{"queues": {"x": {}, "y": {"stream": "llmq:requests:x"}}}"#, [:], #"queues.y.stream (from config file PATH): "llmq:requests:x" is also the stream of queue x"#),
            (#"{"queues": {"x": {"stream": "llmq:replies"}}}"#, [:], #"queues.x.stream (from config file PATH): "llmq:replies" is the reply stream"#),
            (#"{"queues": {"x": {}}}"#, ["LLMQ_QUEUES_X_STREAM": "llmq:stats"], #"queues.x.stream (from environment LLMQ_QUEUES_X_STREAM): "llmq:stats" is the stats hash"#),
            (#"{"queues": {"bad name": {}}}"#, [:], #"queues.bad name (from config file PATH): "bad name" is not a queue name"#),
            (#"{"polling": {"pollHumanAI": "yes"}}"#, [:], #"polling.pollHumanAI (from config file PATH): expected true or false, got "yes""#),
            ("{}", ["LLMQ_QUEUES": "ok,no/slash"], #"queues (from environment LLMQ_QUEUES): "no/slash" is not a queue name"#),
            (#"{"concurrency": true}"#, [:], "concurrency (from config file PATH): expected a whole number, got true"),
            (#"{"streams": {"keepAnswered": 1}}"#, [:], "streams.keepAnswered (from config file PATH): expected true or false, got 1.0"),
        ])
    func refusals(json: String, environment: [String: String], message: String) throws {
        let file = try writeConfig(json)
        let line = refusal(file, environment)
        #expect(line.hasPrefix(message.replacingOccurrences(of: "PATH", with: file)), "\(line)")
        #expect(!line.contains("\n"))
    }

    @Test("an alias and its key in different layers: the higher layer wins, as for any key")
    func aliasAcrossLayers() throws {
        let file = try writeConfig(#"{"workerId": "from-file", "backend": {"modelLoaded": "file-model"}}"#)
        #expect(try load(file, ["LLMQ_CONSUMER": "from-env"]).consumer == "from-env")
        #expect(try load(file, flags: [.init(key: "consumer", flag: "--consumer", value: "from-flag")]).consumer == "from-flag")
        #expect(try load(file, ["LLMQ_BACKEND_MODEL": "env-model"]).backend.model == "env-model")
        #expect(try load(file, ["LLMQ_WORKER_ID": "env-id"]).consumer == "env-id")
    }

    @Test(
        "unknown keys under polling and queues.<Name> are refused",
        arguments: [
            (#"{"polling": {"interval": 5}}"#, "polling.interval (from config file PATH): unknown key"),
            (#"{"polling": {"poll": true}}"#, "polling.poll (from config file PATH): unknown key"),
            (#"{"queues": {"HumanAI": {"prority": 1}}}"#, "queues.HumanAI.prority (from config file PATH): unknown key"),
            (#"{"queues": {"HumanAI": {"minshare": 0.5}}}"#, #"queues.HumanAI.minshare (from config file PATH): unknown key; did you mean "queues.HumanAI.minShare"?"#),
            (#"{"queues": ["HumanAI"]}"#, "queues (from config file PATH): expected an object"),
        ])
    func unknownQueueKeys(json: String, message: String) throws {
        let file = try writeConfig(json)
        let line = refusal(file)
        #expect(line.hasPrefix(message.replacingOccurrences(of: "PATH", with: file)), "\(line)")
    }

    @Test("precedence through the library: file < environment < flags, for fixed and queue keys")
    func precedence() throws {
        let file = try writeConfig(#"{"concurrency": 2, "logLevel": "debug", "metrics": {"port": 9000}, "queues": {"q": {"weight": 2}}}"#)
        let environment = ["LLMQ_CONCURRENCY": "3", "LLMQ_METRICS_PORT": "9100", "LLMQ_QUEUES_Q_WEIGHT": "4"]
        let flags: [ConfigurationLoader.Flag] = [.init(key: "metrics.port", flag: "--metrics-port", value: "9200")]
        let loaded = try ConfigurationLoader.loadWithSources(file: file, environment: environment, flags: flags, defaultConsumer: "c")
        #expect(loaded.configuration.logLevel == .debug)
        #expect(loaded.configuration.concurrency == 3)
        #expect(loaded.configuration.metrics.port == 9200)
        #expect(loaded.configuration.queues.first?.weight == 4)
        #expect(loaded.sources["logLevel"] == .file(file))
        #expect(loaded.sources["concurrency"] == .environment("LLMQ_CONCURRENCY"))
        #expect(loaded.sources["metrics.port"] == .flag("--metrics-port"))
        #expect(loaded.sources["queues.q.weight"] == .environment("LLMQ_QUEUES_Q_WEIGHT"))
    }
}
