import Foundation
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQTestSupport
import LLMQWorker
import Testing

/// `llmq worker --print-config`: each key with its value and source, and never a secret.
@Suite("Configuration: --print-config")
struct PrintConfigTests {
    // MARK: llmq worker --print-config

    private func printConfig(_ arguments: [String], environment: [String: String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runLLMQ(["worker", "--print-config"] + arguments, environment: environment)
    }

    @Test("--print-config shows each backend's keys with their source, and never an API key")
    func printed() throws {
        let file = try BackendListExample.file(key: "sk-file-secret")
        let result = try printConfig(
            ["--config", file],
            environment: ["LLMQ_BACKENDS": #"[{"name": "a", "type": "openai", "endpoint": "https://a.example", "apiKey": "sk-env-secret", "weight": 1.5}, {"type": "llama-cpp"}]"#])
        #expect(result.status == 0, "\(result.stderr)")
        for secret in ["sk-file-secret", "sk-env-secret"] {
            #expect(!result.stdout.contains(secret) && !result.stderr.contains(secret), "\(secret) printed")
        }
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let env = "environment LLMQ_BACKENDS"
        for line in [
            "backends = 2 backends  (\(env))",
            "backends[0].name = a  (\(env))",
            "backends[0].apiKey = <redacted>  (\(env))",
            "backends[0].weight = 1.5  (\(env))",
            "backends[0].slots = (none)  (default)",
            "backends[1].name = llama-cpp  (default)",
            "backends[1].endpoint = http://127.0.0.1:8080  (default)",
            "fallbacks = 1 backend  (config file \(file))",
            "fallbacks[0].model = gpt-4o-mini  (config file \(file))",
            "fallbacks[0].apiKey = <redacted>  (config file \(file))",
            "fallbacks[0].apiKeyFile = (set; its content is the apiKey)  (config file \(file))",
        ] {
            #expect(lines.contains(line), "\(line)")
        }
        #expect(!lines.contains { $0.hasPrefix("backend.") || $0.hasPrefix("fallback.") }, "a list replaces backend.* and fallback.*")
    }

    @Test("--print-config without lists says backend.* is the one backend")
    func printedSingle() throws {
        let result = try printConfig([], environment: ["LLMQ_BACKEND_TYPE": "ollama"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("backends = (none: backend.* is the one backend)  (default)\n"))
        #expect(result.stdout.contains("fallbacks = (none: no fallback)  (default)\n"))
        #expect(result.stdout.contains("backend.type = ollama  (environment LLMQ_BACKEND_TYPE)\n"))
    }
}

/// `--print-config` over the legacy keys and the seed's own configs.
@Suite("Configuration: --print-config with legacy keys")
struct LegacyPrintConfigTests {
    private func writeConfig(_ json: String) throws -> String { try temporaryFile(json, prefix: "llmq-config") }

    // MARK: llmq worker --print-config

    private func runWorker(_ arguments: [String], environment: [String: String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runLLMQ(["worker"] + arguments, environment: environment)
    }

    @Test("--print-config prints every key with its value and source, and the queues, without connecting")
    func printConfig() throws {
        let file = configDirectory.appendingPathComponent("legacy-worker-llamacpp-1.json").path
        // Port 1 on loopback: nothing listens, so a worker that tried to connect would fail.
        let result = try runWorker(
            ["--config", file, "--print-config", "--concurrency", "6"],
            environment: ["LLMQ_REDIS_URL": "redis://127.0.0.1:1", "LLMQ_LOG_LEVEL": "", "LLMQ_STREAMS_GROUP": "g"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("consumer = worker-llamacpp-1  (config file \(file))"))
        #expect(lines.contains("backend.type = llama-cpp  (config file \(file))"))
        #expect(lines.contains("backend.description = Llama.cpp with parallel processing  (config file \(file))"))
        #expect(lines.contains("backend.model = (none)  (default)"))
        #expect(lines.contains("concurrency = 6  (flag --concurrency)"))
        #expect(lines.contains("streams.group = g  (environment LLMQ_STREAMS_GROUP)"))
        #expect(lines.contains("logLevel = info  (default)"), "an empty variable is unset")
        #expect(lines.contains("redis.url = redis://127.0.0.1:1/0  (environment LLMQ_REDIS_URL)"))
        #expect(lines.contains("polling.pollGodMode = false  (config file \(file))"))
        #expect(lines.contains("queues.HumanAI.stream = llmq:requests:HumanAI  (default)"))
        #expect(!result.stdout.contains("GodMode.stream"))
        for (key, _) in ConfigurationLoader.keys where !key.contains("<") && !["queues", "workerId", "backend.modelLoaded", "fallback.modelLoaded"].contains(key) {
            #expect(lines.contains { $0.hasPrefix("\(key) = ") }, "\(key) is printed")
        }
    }

    @Test("--print-config never shows a password or an API key")
    func printConfigRedacts() throws {
        let file = try writeConfig("""
            {"redis": {"url": "redis://admin:hunter2-url@127.0.0.1:6390/2"},
             "backend": {"type": "openai", "endpoint": "https://api.example.com/v1", "apiKey": "sk-file-secret"},
             "fallback": {"type": "openai", "endpoint": "https://other.example.com/v1"}}
            """)
        let result = try runWorker(
            ["--config", file, "--print-config"],
            environment: ["LLMQ_FALLBACK_API_KEY": "sk-env-secret", "LLMQ_REDIS_PASSWORD": "hunter2-env"])
        #expect(result.status == 0, "\(result.stderr)")
        for secret in ["hunter2", "sk-file-secret", "sk-env-secret"] {
            #expect(!result.stdout.contains(secret) && !result.stderr.contains(secret), "\(secret) printed")
        }
        #expect(result.stdout.contains("redis.url = redis://admin:<redacted>@127.0.0.1:6390/2  (config file \(file))"))
        #expect(result.stdout.contains("redis.password = <redacted>  (environment LLMQ_REDIS_PASSWORD)"))
        #expect(result.stdout.contains("backend.apiKey = <redacted>  (config file \(file))"))
        #expect(result.stdout.contains("fallback.apiKey = <redacted>  (environment LLMQ_FALLBACK_API_KEY)"))
    }

    @Test("--print-config with an invalid configuration: one line on stderr, exit 2")
    func printConfigInvalid() throws {
        let file = try writeConfig(#"{"polling": {"pollHumanAI": true, "interval": 5}}"#)
        let result = try runWorker(["--config", file, "--print-config"], environment: [:])
        #expect(result.status == 2)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr == "llmq: invalid configuration: polling.interval (from config file \(file)): unknown key; polling holds only poll<Queue>: true or false (e.g. pollHumanAI)\n")
    }
}
