import ArgumentParser
import Foundation
import LLMQSimulator
import Logging

struct SimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Run an LLM server simulator (llama-server and Ollama APIs) for tests, demos and benchmarks.",
        discussion: """
            N slots generate in parallel; further requests wait (up to --max-queue, then 503). A \
            completion of k tokens takes about prompt-ms + k * token-ms, plus prompt-token-ms for each prompt \
            token not in the prompt cache (each slot keeps its last conversation, and --cache-entries more are \
            kept in RAM, as llama-server's prompt cache). Content is deterministic. \
            Faults can also be changed at run time with POST /sim/faults; GET /sim/stats counts requests.
            """
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0 picks a free one).") var port = 8080
    @Option(help: "Requests generated in parallel.") var slots = 4
    @Option(name: .customLong("token-ms"), help: "Milliseconds per generated token.") var tokenMs = 10.0
    @Option(name: .customLong("prompt-ms"), help: "Milliseconds before the first token.") var promptMs = 0.0
    @Option(name: .customLong("prompt-token-ms"), help: "Milliseconds per prompt token not in the prompt cache.")
    var promptTokenMs = 0.0
    @Option(name: .customLong("cache-entries"), help: "Earlier conversations kept in the RAM prompt cache (0: none).")
    var cacheEntries = 64
    @Option(name: .customLong("max-queue"), help: "Waiting requests beyond which the answer is 503.") var maxQueue = 512
    @Option(name: .customLong("model"), help: "A model that exists (repeat for several).") var models: [String] = []
    @Option(name: .customLong("default-tokens"), help: "Completion length without max_tokens.") var defaultTokens = 16
    @Option(name: .customLong("context-size"), help: "Prompt + max tokens allowed.") var contextSize = 4096
    @Flag(name: .customLong("strict-models"), help: "Check model names on /v1 too.") var strictModels = false
    @Option(name: .customLong("fail-rate"), help: "Fraction of completions answered 500.") var failRate = 0.0
    @Option(name: .customLong("busy-rate"), help: "Fraction answered 503.") var busyRate = 0.0
    @Option(name: .customLong("rate-limit-rate"), help: "Fraction answered 429.") var rateLimitRate = 0.0
    @Option(name: .customLong("hang-rate"), help: "Fraction that hang for --hang-ms.") var hangRate = 0.0
    @Option(name: .customLong("hang-ms"), help: "How long a hanging request hangs.") var hangMs = 60_000
    @Option(name: .customLong("fail-first"), help: "The first N completions get 500.") var failFirst = 0
    @Option(name: .customLong("slow-factor"), help: "Multiplies all generation time.") var slowFactor = 1.0
    @Option(name: .customLong("mid-stream-error-rate"), help: "Fraction of streams that break off with an error.") var midStreamErrorRate = 0.0
    @Option(help: "Seed for fault choices.") var seed: UInt64 = 1

    func run() async throws {
        ignoreBrokenPipes()
        let faults = SimulatorFaults(
            failureRate: failRate, busyRate: busyRate, rateLimitRate: rateLimitRate, hangRate: hangRate,
            hangMilliseconds: hangMs, failFirst: failFirst, slowFactor: slowFactor,
            midStreamErrorRate: midStreamErrorRate, seed: seed)
        let configuration = SimulatorConfiguration(
            host: host, port: port, slots: slots, tokenMilliseconds: tokenMs, promptMilliseconds: promptMs,
            promptTokenMilliseconds: promptTokenMs, cacheEntries: cacheEntries, maxQueue: maxQueue,
            models: models.isEmpty ? ["sim"] : models, defaultTokens: defaultTokens,
            contextSize: contextSize, strictModels: strictModels, faults: faults)
        do {
            try configuration.validate()
        } catch {
            throw fail("invalid simulator option: \(error)", code: 2)
        }
        bootstrapLogging(level: .notice)
        let simulator = Simulator(configuration: configuration, logger: Logger(label: "llmq.sim")) { port in
            FileHandle.standardError.write(Data("llmq sim listening on \(configuration.host):\(port)\n".utf8))
        }
        try await simulator.run()
    }
}
