import Foundation
import LLMQBackends
import LLMQClient
import LLMQConfiguration
import LLMQContract
import LLMQTestSupport
import LLMQWorker
import Testing

@Suite("Configuration: file, environment, flags")
struct ConfigurationTests {
    private func writeConfig(_ json: String) throws -> String { try temporaryFile(json, prefix: "llmq-config") }

    @Test("flags override the environment, which overrides the file")
    func precedence() throws {
        let file = try writeConfig("""
            {"redis": {"url": "redis://file:1111"}, "concurrency": 2,
             "backend": {"type": "ollama", "endpoint": "http://file:11434", "model": "file-model"}}
            """)
        let environment = ["LLMQ_CONCURRENCY": "3", "LLMQ_BACKEND_MODEL": "env-model", "LLMQ_REDIS_URL": "redis://env:2222"]
        let flags = [ConfigurationLoader.Flag(key: "concurrency", flag: "--concurrency", value: "7")]
        let configuration = try ConfigurationLoader.load(file: file, environment: environment, flags: flags, defaultConsumer: "c")
        #expect(configuration.concurrency == 7)
        #expect(configuration.backend.model == "env-model")
        #expect(configuration.backend.kind == .ollama)
        #expect(configuration.backend.endpoint == "http://file:11434")
        #expect(configuration.redis.host == "env")
        #expect(configuration.redis.port == 2222)
    }

    @Test("an empty environment variable means not set, as compose passes them")
    func emptyEnvironmentValues() throws {
        let environment = [
            "LLMQ_BACKEND_MODEL": "", "LLMQ_CONCURRENCY": " ", "LLMQ_FALLBACK_TYPE": "", "LLMQ_REDIS_URL": "",
            "LLMQ_STREAMS_KEEP_ANSWERED": "",
        ]
        let configuration = try ConfigurationLoader.load(file: nil, environment: environment, defaultConsumer: "c")
        #expect(configuration.backend.model == nil)
        #expect(configuration.concurrency == 4)
        #expect(configuration.fallback == nil)
        #expect(configuration.redis.port == 6379)
        #expect(!configuration.streams.keepAnswered)
    }

    @Test("stream retention keys: history on, bounds, and a history stream that collides is refused")
    func retention() throws {
        let environment = [
            "LLMQ_STREAMS_KEEP_ANSWERED": "true", "LLMQ_STREAMS_ANSWERED_MAX_LENGTH": "500",
            "LLMQ_STREAMS_ANSWERED_MAX_AGE_SECONDS": "86400", "LLMQ_STREAMS_DEAD_MAX_LENGTH": "0",
        ]
        let configuration = try ConfigurationLoader.load(file: nil, environment: environment, defaultConsumer: "c")
        #expect(configuration.streams.keepAnswered)
        #expect(configuration.streams.answeredMaxLength == 500)
        #expect(configuration.streams.answeredMaxAgeSeconds == 86400)
        #expect(configuration.streams.deadMaxLength == 0)
        let collides = try writeConfig(#"{"streams": {"keepAnswered": true, "answered": "llmq:replies"}}"#)
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(file: collides, environment: [:], defaultConsumer: "c") }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(file: nil, environment: ["LLMQ_STREAMS_KEEP_ANSWERED": "maybe"], defaultConsumer: "c")
        }
    }

    @Test("LLMQ_CONFIG names the file when --config is not given")
    func configFromEnvironment() throws {
        let file = try writeConfig(#"{"consumer": "from-file"}"#)
        let configuration = try ConfigurationLoader.load(file: nil, environment: ["LLMQ_CONFIG": file], defaultConsumer: "c")
        #expect(configuration.consumer == "from-file")
    }

    @Test("defaults need no configuration at all")
    func defaults() throws {
        let configuration = try ConfigurationLoader.load(file: nil, environment: [:], defaultConsumer: "host-1")
        #expect(configuration.consumer == "host-1")
        #expect(configuration.backend.kind == .llamaCpp)
        #expect(configuration.backend.endpoint == "http://127.0.0.1:8080")
        #expect(configuration.streams.requests == "llmq:requests")
        #expect(configuration.streams.group == "llmq")
        #expect(configuration.streams.replies == "llmq:replies")
        #expect(configuration.limits.maxRequestBytes == 1 << 20)
    }

    @Test("environment names are the keys in upper snake case")
    func environmentNames() {
        #expect(ConfigurationLoader.environmentName(for: "backend.apiKeyFile") == "LLMQ_BACKEND_API_KEY_FILE")
        #expect(ConfigurationLoader.environmentName(for: "concurrency") == "LLMQ_CONCURRENCY")
        #expect(ConfigurationLoader.environmentName(for: "redis.url") == "LLMQ_REDIS_URL")
    }

    @Test(
        "an invalid value names its key and where it came from",
        arguments: [
            (["LLMQ_CONCURRENCY": "many"], "concurrency (from environment LLMQ_CONCURRENCY): expected a whole number"),
            (["LLMQ_CONCURRENCY": "0"], "concurrency (from environment LLMQ_CONCURRENCY): 0 is out of range"),
            (["LLMQ_BACKEND_TYPE": "olama"], "backend.type (from environment LLMQ_BACKEND_TYPE): \"olama\" is not one of llama-cpp, ollama, openai"),
            (["LLMQ_BACKEND_TYPE": "openai", "LLMQ_BACKEND_MODEL": "gpt"], "backend.endpoint: required for the openai backend"),
            (["LLMQ_BACKEND_ENDPOINT": "localhost:8080"], "backend.endpoint (from environment LLMQ_BACKEND_ENDPOINT): \"localhost:8080\" is not an http:// or https:// URL"),
            (["LLMQ_REDIS_URL": "http://x"], "redis.url (from environment LLMQ_REDIS_URL): scheme \"http\" is not supported"),
            (["LLMQ_STREAMS_REPLIES": "llmq:requests"], "streams.replies (from environment LLMQ_STREAMS_REPLIES): the reply stream must differ"),
            (["LLMQ_FALLBACK_ENDPOINT": "http://x:1"], "fallback.type: required when any fallback.* key is set"),
            (["LLMQ_USERS_MAX_IN_FLIGHT": "2"], "users.maxInFlight (from environment LLMQ_USERS_MAX_IN_FLIGHT): a per-user limit needs users.fair: true"),
            (["LLMQ_USERS_FAIR": "true", "LLMQ_CONSUMER": "llmq:fair"], "consumer (from environment LLMQ_CONSUMER): \"llmq:fair\" is the name fair intake"),
        ])
    func invalidValues(environment: [String: String], message: String) {
        #expect {
            try ConfigurationLoader.load(file: nil, environment: environment, defaultConsumer: "c")
        } throws: { error in
            "\(error)".hasPrefix(message)
        }
    }

    @Test("unknown keys and wrong types in the file are errors")
    func fileErrors() throws {
        let typo = try writeConfig(#"{"backend": {"endpont": "http://x"}}"#)
        #expect {
            try ConfigurationLoader.load(file: typo, environment: [:], defaultConsumer: "c")
        } throws: { error in
            "\(error)" == "backend.endpont (from config file \(typo)): unknown key; did you mean \"backend.endpoint\"?"
                || "\(error)".hasPrefix("backend.endpont (from config file \(typo)): unknown key")
        }
        let wrongType = try writeConfig(#"{"concurrency": "four"}"#)
        #expect {
            try ConfigurationLoader.load(file: wrongType, environment: [:], defaultConsumer: "c")
        } throws: { error in
            "\(error)".hasPrefix("concurrency (from config file \(wrongType)): expected a whole number")
        }
        let broken = try writeConfig(#"{"concurrency": 4"#)
        #expect {
            try ConfigurationLoader.load(file: broken, environment: [:], defaultConsumer: "c")
        } throws: { error in
            "\(error)".hasPrefix("config (from config file \(broken)): not valid JSON")
        }
        #expect {
            try ConfigurationLoader.load(file: "/nonexistent/llmq.json", environment: [:], defaultConsumer: "c")
        } throws: { error in
            "\(error)" == "config (from config file /nonexistent/llmq.json): cannot read the file"
        }
    }

    @Test("the example configs in config/ load as given")
    func exampleConfigs() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: configDirectory.path).filter { $0.hasSuffix(".json") }
        #expect(files.count >= 2)
        for file in files {
            let configuration = try ConfigurationLoader.load(
                file: configDirectory.appendingPathComponent(file).path, environment: [:], defaultConsumer: "c")
            #expect(throws: Never.self) { try configuration.backend.resolvedEndpoint() }
        }
    }

    @Test("the API key is read from a file, trimmed")
    func apiKeyFile() throws {
        let keyFile = FileManager.default.temporaryDirectory.appendingPathComponent("llmq-key-\(UUID().uuidString)").path
        try "sk-secret\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        let configuration = try ConfigurationLoader.load(
            file: nil,
            environment: ["LLMQ_BACKEND_TYPE": "openai", "LLMQ_BACKEND_ENDPOINT": "https://api.example.com/v1", "LLMQ_BACKEND_MODEL": "m", "LLMQ_BACKEND_API_KEY_FILE": keyFile],
            defaultConsumer: "c")
        #expect(configuration.backend.apiKey == "sk-secret")
    }
}

@Suite("Backend endpoints")
struct EndpointTests {
    @Test(
        "a base URL gets the kind's native path; a full path selects the API it names",
        arguments: [
            (BackendConfiguration.Kind.llamaCpp, "http://h:8080", BackendConfiguration.API.openAIChat, "http://h:8080/v1/chat/completions"),
            (.llamaCpp, "http://h:8080/", .openAIChat, "http://h:8080/v1/chat/completions"),
            (.openAI, "https://api.example.com/v1", .openAIChat, "https://api.example.com/v1/chat/completions"),
            (.ollama, "http://h:11434", .ollamaChat, "http://h:11434/api/chat"),
            (.ollama, "http://h:11434/api/chat", .ollamaChat, "http://h:11434/api/chat"),
            (.ollama, "http://h:11434/v1/chat/completions", .openAIChat, "http://h:11434/v1/chat/completions"),
            (.ollama, "http://h:11434/v1", .openAIChat, "http://h:11434/v1/chat/completions"),
            (.llamaCpp, "http://h:8080/v1/chat/completions", .openAIChat, "http://h:8080/v1/chat/completions"),
        ])
    func resolution(kind: BackendConfiguration.Kind, endpoint: String, api: BackendConfiguration.API, url: String) throws {
        let resolved = try BackendConfiguration(kind: kind, endpoint: endpoint).resolvedEndpoint()
        #expect(resolved.api == api)
        #expect(resolved.url == url)
    }

    @Test("text-completion paths and non-HTTP URLs are refused")
    func refused() {
        #expect(throws: EndpointError.self) { try BackendConfiguration(kind: .ollama, endpoint: "http://h:11434/api/generate").resolvedEndpoint() }
        #expect(throws: EndpointError.self) { try BackendConfiguration(kind: .llamaCpp, endpoint: "ftp://h").resolvedEndpoint() }
    }
}
