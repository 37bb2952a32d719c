import Foundation
import LLMQBackends
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQTestSupport
import LLMQWorker
import Testing

/// `backends: [...]` and `fallbacks: [...]`: several named backends with weights, slots and
/// models, in the file or as `LLMQ_BACKENDS` JSON, and how `--print-config` shows them.
@Suite("Configuration: lists of backends")
struct BackendListConfigurationTests {
    private func writeFile(_ text: String) throws -> String { try temporaryFile(text, prefix: "llmq-backends") }

    private func load(_ file: String?, _ environment: [String: String] = [:]) throws -> WorkerConfiguration {
        try ConfigurationLoader.load(file: file, environment: environment, defaultConsumer: "host-1")
    }

    /// The one error line for a configuration that must be refused.
    private func refusal(_ file: String?, _ environment: [String: String] = [:]) -> String {
        do {
            _ = try load(file, environment)
            return "(loaded)"
        } catch {
            return "\(error)"
        }
    }

    @Test("the example loads: names, weights, slots, models; backend is the first, fallback the first fallback")
    func example() throws {
        let configuration = try load(try BackendListExample.file())
        let backends = configuration.backends
        #expect(backends.map(\.name) == ["gpu-a", "gpu-b", "new-model"])
        #expect(backends.map(\.kind) == [.llamaCpp, .llamaCpp, .ollama])
        #expect(backends.map(\.endpoint) == ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:11434"])
        #expect(backends.map(\.weight) == [2, nil, 0.1])
        #expect(backends.map(\.slots) == [8, 4, nil])
        #expect(backends.map(\.models) == [nil, nil, ["qwen2.5:7b-instruct-q4_K_M"]])
        #expect(configuration.backend == backends[0])
        #expect(configuration.fallbacks.count == 1)
        let cloud = try #require(configuration.fallbacks.first)
        #expect(cloud.name == "cloud")
        #expect(cloud.kind == .openAI)
        #expect(cloud.model == "gpt-4o-mini")
        #expect(cloud.apiKey == "sk-from-file")
        #expect(configuration.fallback == cloud)
    }

    @Test("only backend.*: backends and fallbacks stay empty, as before")
    func singleBackend() throws {
        let file = try writeFile(#"{"backend": {"type": "ollama"}, "fallback": {"type": "openai", "endpoint": "https://x.example"}}"#)
        let configuration = try load(file)
        #expect(configuration.backends.isEmpty)
        #expect(configuration.fallbacks.isEmpty)
        #expect(configuration.backend.kind == .ollama)
        #expect(configuration.fallback?.kind == .openAI)
    }

    @Test("unnamed items get their type, then type-2, type-3..., skipping names given; models may be one string")
    func defaultNames() throws {
        let file = try writeFile("""
            {"streams": {"keepAnswered": true}, "metrics": {"port": 9100}, "breaker": {"openSeconds": 2.5},
             "backends": [
               {"type": "llama-cpp"}, {"type": "ollama", "models": "llama3.2:1b", "model": "llama3.2:3b"},
               {"name": "llama-cpp-2", "endpoint": "http://b:8080"}, {"endpoint": "http://c:8080"}],
             "fallbacks": [{"type": "ollama", "endpoint": "http://d:11434"}]}
            """)
        let configuration = try load(file)
        #expect(configuration.backends.map(\.name) == ["llama-cpp", "ollama", "llama-cpp-2", "llama-cpp-3"])
        #expect(configuration.backends[1].models == ["llama3.2:1b", "llama3.2:3b"], "model is added to models")
        #expect(configuration.backends[0].endpoint == "http://127.0.0.1:8080", "the type's default endpoint")
        #expect(configuration.fallbacks.map(\.name) == ["ollama-2"])
        // The other keys come through the library's JSON snapshot, which gets the file without the lists.
        #expect(configuration.streams.keepAnswered)
        #expect(configuration.metrics.port == 9100)
        #expect(configuration.breaker.openDuration == .milliseconds(2500))
    }

    @Test(
        "each mistake is one line naming the key and its source",
        arguments: [
            (#"{"backends": [{"type": "llama-cpp"}, {"endpiont": "http://x:1"}]}"#,
             #"backends[1].endpiont (from config file PATH): unknown key; did you mean "backends[1].endpoint"?"#),
            (#"{"backends": [{"weight": "heavy"}]}"#, #"backends[0].weight (from config file PATH): expected a number >= 0, got "heavy""#),
            (#"{"backends": [{"weight": -1}]}"#, "backends[0].weight (from config file PATH): expected a number >= 0, got -1"),
            (#"{"backends": [{"slots": 0}]}"#, "backends[0].slots (from config file PATH): 0 is out of range 1...4096"),
            (#"{"backends": [{"slots": 2.5}]}"#, "backends[0].slots (from config file PATH): expected a whole number, got 2.5"),
            (#"{"backends": [{"models": [""]}]}"#, "backends[0].models (from config file PATH): a model name must not be empty"),
            (#"{"backends": [{"models": ["a", 1]}]}"#, "backends[0].models (from config file PATH): expected a list of model names, got 1.0 in it"),
            (#"{"backends": [{"models": {"a": 1}}]}"#, "backends[0].models (from config file PATH): expected a list of model names or one name, got an object"),
            (#"{"backends": [{"slots": true}]}"#, "backends[0].slots (from config file PATH): expected a whole number, got true"),
            (#"{"backends": [{"name": ""}]}"#, "backends[0].name (from config file PATH): must not be empty"),
            (#"{"backend": [{"type": "ollama"}]}"#, #"backend (from config file PATH): expected an object; a list of backends is "backends""#),
            (#"{"backends": [{"models": []}]}"#, "backends[0].models (from config file PATH): must name at least one model; leave it out to serve any"),
            (#"{"backends": [{"type": "vllm"}]}"#, #"backends[0].type (from config file PATH): "vllm" is not one of llama-cpp, ollama, openai"#),
            (#"{"backends": [{"type": "openai"}]}"#, "backends[0].endpoint (from config file PATH): required for the openai backend"),
            (#"{"backends": [{"endpoint": {"url": "x"}}]}"#, "backends[0].endpoint (from config file PATH): expected a single value, found an object"),
            (#"{"backends": ["http://x:8080"]}"#, #"backends[0] (from config file PATH): expected an object of backend keys (type, endpoint, ...), got "http://x:8080""#),
            (#"{"backends": {"type": "ollama"}}"#, "backends (from config file PATH): expected a list of backends, got an object"),
            (#"{"backends": []}"#, "backends (from config file PATH): must list at least one backend"),
            (#"{"backends": [{"name": "gpu-a"}, {"name": "b"}, {"name": "gpu-a"}]}"#,
             #"backends[2].name (from config file PATH): "gpu-a" is already the name of backends[0]"#),
            (#"{"backends": [{"name": "cloud"}], "fallbacks": [{"name": "cloud", "type": "openai", "endpoint": "https://x"}]}"#,
             #"fallbacks[0].name (from config file PATH): "cloud" is already the name of backends[0]"#),
            (#"{"backends": [{"type": "ollama"}], "backend": {"endpoint": "http://x:1"}}"#,
             "backend.endpoint (from config file PATH): set either backends (from config file PATH) or backend.*, not both"),
            (#"{"fallbacks": [{"type": "ollama"}], "fallback": {"type": "ollama"}}"#,
             "fallback.type (from config file PATH): set either fallbacks (from config file PATH) or fallback.*, not both"),
        ])
    func mistakes(json: String, expected: String) throws {
        let file = try writeFile(json)
        #expect(refusal(file) == expected.replacingOccurrences(of: "PATH", with: file))
    }

    @Test("LLMQ_BACKENDS is a JSON array of the same items, and replaces the file's list")
    func environment() throws {
        let json = #"[{"name": "env-a", "type": "ollama", "endpoint": "http://e:11434", "weight": 3, "slots": 2}, {"type": "ollama"}]"#
        let configuration = try load(try BackendListExample.file(), ["LLMQ_BACKENDS": json])
        #expect(configuration.backends.map(\.name) == ["env-a", "ollama"])
        #expect(configuration.backends[0].weight == 3)
        #expect(configuration.backends[0].slots == 2)
        #expect(configuration.backend.name == "env-a")
        #expect(configuration.fallbacks.map(\.name) == ["cloud"], "the file's fallbacks stay")

        let loaded = try ConfigurationLoader.loadWithSources(file: nil, environment: ["LLMQ_BACKENDS": json], defaultConsumer: "c")
        #expect(loaded.sources["backends[0].weight"] == .environment("LLMQ_BACKENDS"))

        #expect(refusal(nil, ["LLMQ_BACKENDS": #"[{"slots": "many"}]"#])
            == #"backends[0].slots (from environment LLMQ_BACKENDS): expected a whole number, got "many""#)
        #expect(refusal(nil, ["LLMQ_BACKENDS": "http://a:8080,http://b:8080"]).hasPrefix(
            "backends (from environment LLMQ_BACKENDS): expected a JSON array of backends, not valid JSON"))
        #expect(refusal(nil, ["LLMQ_BACKENDS": "[]"]) == "backends (from environment LLMQ_BACKENDS): must list at least one backend")
        #expect(refusal(nil, ["LLMQ_BACKENDS": #"[{"type": "ollama"}]"#, "LLMQ_BACKEND_TYPE": "ollama"])
            == "backend.type (from environment LLMQ_BACKEND_TYPE): set either backends (from environment LLMQ_BACKENDS) or backend.*, not both")
        #expect(try load(nil, ["LLMQ_BACKENDS": #"[{"type": "ollama"}]"#, "LLMQ_BACKEND_TYPE": ""]).backends.count == 1,
            "an empty variable is unset")
    }

    @Test("LLMQ_FALLBACKS=[] takes the file's fallbacks away")
    func noFallbacks() throws {
        let configuration = try load(try BackendListExample.file(), ["LLMQ_FALLBACKS": "[]"])
        #expect(configuration.fallbacks.isEmpty)
        #expect(configuration.fallback == nil)
    }

    @Test("the example file in config/ loads")
    func exampleInConfig() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("config/worker-backends.json").path
        let configuration = try load(path)
        #expect(configuration.backends.map(\.name) == ["gpu-a", "gpu-b", "new-model"])
        #expect(configuration.fallbacks.map(\.name) == ["cloud"])
    }
}
