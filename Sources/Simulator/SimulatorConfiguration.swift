/// How the simulated LLM server behaves: where it listens, how fast it generates, and how much it accepts.
///
/// The defaults mimic a small llama-server with four parallel slots, 10 ms per token, and Ollama's queue
/// limit. With `tokenMilliseconds`, `promptMilliseconds` and `promptTokenMilliseconds` all 0 the simulator never
/// sleeps, which is what throughput benchmarks of the worker want.
public struct SimulatorConfiguration: Sendable {
    /// Address to bind, such as "127.0.0.1" or "0.0.0.0".
    public var host: String
    /// TCP port to listen on; 0 lets the system pick a free port (reported through `onServerRunning`).
    public var port: Int
    /// Requests generated in parallel (llama-server's `--parallel`); further requests wait in a FIFO queue.
    public var slots: Int
    /// Time to generate one token, in milliseconds.
    public var tokenMilliseconds: Double
    /// Fixed time per request before the first token (prompt processing), in milliseconds.
    public var promptMilliseconds: Double
    /// Time to process one prompt token the prompt cache did not hold, in milliseconds, added to
    /// `promptMilliseconds`. 0 (the default) makes prompt time independent of the cache.
    public var promptTokenMilliseconds: Double
    /// Earlier slot contents kept in the host-memory prompt cache (llama-server's `--cache-ram`), from which
    /// a slot can restore a conversation another one displaced; 0 keeps none, so only the slots cache.
    public var cacheEntries: Int
    /// Requests allowed to wait for a slot; beyond this they are answered 503 at once (Ollama's `OLLAMA_MAX_QUEUE`).
    public var maxQueue: Int
    /// Ollama-style model names that exist. A name without a tag also matches "name:latest".
    public var models: [String]
    /// Completion length, in tokens, when the request gives no maximum.
    public var defaultTokens: Int
    /// Prompt tokens plus completion tokens allowed per request on the OpenAI-compatible paths;
    /// more is answered with llama-server's 400 `exceed_context_size_error`.
    public var contextSize: Int
    /// Check the model name on `/v1/*` too. llama-server ignores it, so this is off by default;
    /// Ollama's native `/api/*` paths always check it.
    public var strictModels: Bool
    /// Faults injected into completion requests; replaceable at run time with `POST /sim/faults`.
    public var faults: SimulatorFaults

    /// Creates a configuration; every parameter has the default documented on its property.
    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        slots: Int = 4,
        tokenMilliseconds: Double = 10,
        promptMilliseconds: Double = 0,
        promptTokenMilliseconds: Double = 0,
        cacheEntries: Int = 64,
        maxQueue: Int = 512,
        models: [String] = ["sim"],
        defaultTokens: Int = 16,
        contextSize: Int = 4096,
        strictModels: Bool = false,
        faults: SimulatorFaults = SimulatorFaults()
    ) {
        self.host = host
        self.port = port
        self.slots = slots
        self.tokenMilliseconds = tokenMilliseconds
        self.promptMilliseconds = promptMilliseconds
        self.promptTokenMilliseconds = promptTokenMilliseconds
        self.cacheEntries = cacheEntries
        self.maxQueue = maxQueue
        self.models = models
        self.defaultTokens = defaultTokens
        self.contextSize = contextSize
        self.strictModels = strictModels
        self.faults = faults
    }

    /// Throws the first invalid value, naming the property that holds it.
    public func validate() throws(SimulatorConfigurationError) {
        if !(0...65535).contains(port) { throw .init(key: "port", message: "must be between 0 and 65535, got \(port)") }
        if slots < 1 { throw .init(key: "slots", message: "must be at least 1, got \(slots)") }
        if !(tokenMilliseconds >= 0) || !tokenMilliseconds.isFinite {
            throw .init(key: "tokenMilliseconds", message: "must be a finite number >= 0, got \(tokenMilliseconds)")
        }
        if !(promptMilliseconds >= 0) || !promptMilliseconds.isFinite {
            throw .init(key: "promptMilliseconds", message: "must be a finite number >= 0, got \(promptMilliseconds)")
        }
        if !(promptTokenMilliseconds >= 0) || !promptTokenMilliseconds.isFinite {
            throw .init(
                key: "promptTokenMilliseconds",
                message: "must be a finite number >= 0, got \(promptTokenMilliseconds)"
            )
        }
        if cacheEntries < 0 { throw .init(key: "cacheEntries", message: "must be >= 0, got \(cacheEntries)") }
        if maxQueue < 0 { throw .init(key: "maxQueue", message: "must be >= 0, got \(maxQueue)") }
        if models.isEmpty || models.contains(where: \.isEmpty) {
            throw .init(key: "models", message: "must name at least one model, and no name may be empty")
        }
        if defaultTokens < 1 { throw .init(key: "defaultTokens", message: "must be at least 1, got \(defaultTokens)") }
        if contextSize < 1 { throw .init(key: "contextSize", message: "must be at least 1, got \(contextSize)") }
        try faults.validate()
    }
}

/// Faults the simulator injects into completion requests (`/v1/chat/completions`, `/chat/completions`, `/api/chat`).
///
/// Random faults are drawn from a generator seeded with `seed` and the request's arrival number, so the same
/// sequence of requests meets the same faults. Rates are checked in the order failure, busy, rate limit, hang,
/// and their sum should not exceed 1. Decoding treats missing fields as 0, except `hangMilliseconds`
/// (60 000) and `slowFactor` (1).
public struct SimulatorFaults: Sendable, Codable, Equatable {
    /// Fraction of completion requests answered HTTP 500.
    public var failureRate: Double
    /// Fraction of completion requests answered HTTP 503 (busy).
    public var busyRate: Double
    /// Fraction of completion requests answered HTTP 429 (rate limited).
    public var rateLimitRate: Double
    /// Fraction of completion requests that get no answer for `hangMilliseconds`, then a 500 and a closed connection.
    /// A hanging request holds no slot: it stands for a request lost between client and server.
    public var hangRate: Double
    /// How long a hanging request is held, in milliseconds.
    public var hangMilliseconds: Int
    /// The first N completion requests after the faults are set (or the stats are reset) get a 500.
    public var failFirst: Int
    /// Multiplies all generation time (prompt and tokens).
    public var slowFactor: Double
    /// Fraction of streaming responses that stop after a few tokens with an error object.
    public var midStreamErrorRate: Double
    /// Seed of the fault generator, so fault choice is reproducible.
    public var seed: UInt64

    /// Creates a fault set; the defaults inject nothing.
    public init(
        failureRate: Double = 0,
        busyRate: Double = 0,
        rateLimitRate: Double = 0,
        hangRate: Double = 0,
        hangMilliseconds: Int = 60_000,
        failFirst: Int = 0,
        slowFactor: Double = 1,
        midStreamErrorRate: Double = 0,
        seed: UInt64 = 0
    ) {
        self.failureRate = failureRate
        self.busyRate = busyRate
        self.rateLimitRate = rateLimitRate
        self.hangRate = hangRate
        self.hangMilliseconds = hangMilliseconds
        self.failFirst = failFirst
        self.slowFactor = slowFactor
        self.midStreamErrorRate = midStreamErrorRate
        self.seed = seed
    }

    private enum CodingKeys: String, CodingKey {
        case failureRate, busyRate, rateLimitRate, hangRate, hangMilliseconds, failFirst, slowFactor
        case midStreamErrorRate, seed
    }

    /// Decodes a fault set; a missing field takes its default, so `{}` means "no faults".
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = SimulatorFaults()
        self.failureRate = try container.decodeIfPresent(Double.self, forKey: .failureRate) ?? defaults.failureRate
        self.busyRate = try container.decodeIfPresent(Double.self, forKey: .busyRate) ?? defaults.busyRate
        self.rateLimitRate = try container.decodeIfPresent(Double.self, forKey: .rateLimitRate) ?? defaults.rateLimitRate
        self.hangRate = try container.decodeIfPresent(Double.self, forKey: .hangRate) ?? defaults.hangRate
        self.hangMilliseconds =
            try container.decodeIfPresent(Int.self, forKey: .hangMilliseconds) ?? defaults.hangMilliseconds
        self.failFirst = try container.decodeIfPresent(Int.self, forKey: .failFirst) ?? defaults.failFirst
        self.slowFactor = try container.decodeIfPresent(Double.self, forKey: .slowFactor) ?? defaults.slowFactor
        self.midStreamErrorRate =
            try container.decodeIfPresent(Double.self, forKey: .midStreamErrorRate) ?? defaults.midStreamErrorRate
        self.seed = try container.decodeIfPresent(UInt64.self, forKey: .seed) ?? defaults.seed
    }

    /// Throws the first invalid value, naming the field that holds it.
    public func validate() throws(SimulatorConfigurationError) {
        let rates: [(String, Double)] = [
            ("failureRate", failureRate), ("busyRate", busyRate), ("rateLimitRate", rateLimitRate),
            ("hangRate", hangRate), ("midStreamErrorRate", midStreamErrorRate),
        ]
        for (key, rate) in rates where !(0...1).contains(rate) {
            throw .init(key: "faults.\(key)", message: "must be between 0 and 1, got \(rate)")
        }
        if hangMilliseconds < 0 {
            throw .init(key: "faults.hangMilliseconds", message: "must be >= 0, got \(hangMilliseconds)")
        }
        if failFirst < 0 { throw .init(key: "faults.failFirst", message: "must be >= 0, got \(failFirst)") }
        if !(slowFactor >= 0) || !slowFactor.isFinite {
            throw .init(key: "faults.slowFactor", message: "must be a finite number >= 0, got \(slowFactor)")
        }
    }
}

/// An invalid configuration or fault value, with the key that holds it.
public struct SimulatorConfigurationError: Error, Sendable, CustomStringConvertible {
    /// The property or JSON field holding the invalid value, such as "slots" or "faults.failureRate".
    public let key: String
    /// What is wrong with the value.
    public let message: String

    /// "key: message".
    public var description: String { "\(key): \(message)" }
}

/// Counters of the simulator, as served by `GET /sim/stats`.
public struct SimulatorStats: Sendable, Codable, Equatable {
    /// Completion requests received, valid or not.
    public var requests: Int
    /// Completion requests answered in full (a stream counts once its last chunk is written).
    public var completed: Int
    /// Requests holding a slot right now.
    public var inFlight: Int
    /// The highest number of requests that held a slot at once.
    public var maxInFlight: Int
    /// Requests waiting for a slot right now.
    public var queued: Int
    /// The most requests that waited for a slot at once: above 0, a client sent more than the
    /// slots could take (llmq's pool-wide slots keep it at 0).
    public var maxQueued: Int
    /// Requests answered 503 because the queue was full.
    public var rejected: Int
    /// Faults injected (500, 503, 429, hang, mid-stream error).
    public var faults: Int
    /// Requests answered 4xx because of the request itself (bad body, unknown model, context too large).
    public var invalid: Int
    /// Requests abandoned because the client went away.
    public var cancelled: Int
    /// Prompt tokens of the requests that got a slot.
    public var promptTokens: Int
    /// Of `promptTokens`, those the prompt cache held, so not computed again; over `promptTokens`, the hit ratio.
    public var cachedPromptTokens: Int

    /// Creates stats; all counters default to 0.
    public init(
        requests: Int = 0, completed: Int = 0, inFlight: Int = 0, maxInFlight: Int = 0, queued: Int = 0,
        maxQueued: Int = 0, rejected: Int = 0, faults: Int = 0, invalid: Int = 0, cancelled: Int = 0,
        promptTokens: Int = 0, cachedPromptTokens: Int = 0
    ) {
        self.requests = requests
        self.completed = completed
        self.inFlight = inFlight
        self.maxInFlight = maxInFlight
        self.queued = queued
        self.maxQueued = maxQueued
        self.rejected = rejected
        self.faults = faults
        self.invalid = invalid
        self.cancelled = cancelled
        self.promptTokens = promptTokens
        self.cachedPromptTokens = cachedPromptTokens
    }
}
