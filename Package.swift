// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "llmq",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "llmq", targets: ["llmq"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        // Configuration providers (JSON file, environment, in-memory) behind one reader. "JSON" is
        // its default trait today; named here so the file provider cannot silently go missing.
        .package(url: "https://github.com/apple/swift-configuration", from: "1.0.0", traits: ["JSON"]),
    ],
    targets: [
        // C libraries, one thin system-library target each.
        .systemLibrary(
            name: "CHiredis",
            path: "Sources/CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .systemLibrary(
            name: "CCurl",
            path: "Sources/CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),

        // Redis client over hiredis: argv commands, RESP values, one I/O thread per connection.
        .target(
            name: "LLMQRedis",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "CHiredis",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "Sources/Redis"
        ),
        // HTTP client over libcurl's multi interface, driven by one thread.
        .target(
            name: "LLMQHTTP",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "CCurl",
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            path: "Sources/HTTP"
        ),
        // The JSON bodies of the OpenAI-compatible and Ollama APIs, shared by the backends, the
        // simulator and anything that serves those APIs. Foundation only.
        .target(
            name: "LLMQWire",
            path: "Sources/Wire"
        ),
        // LLM backends: OpenAI-compatible (llama-server, vLLM, OpenAI) and Ollama's native API.
        .target(
            name: "LLMQBackends",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "LLMQHTTP",
                "LLMQWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "Sources/Backends"
        ),
        // Every configuration key, read from flags, environment and a JSON file (apple's
        // swift-configuration underneath), and the keys each queue uses.
        .target(
            name: "LLMQConfiguration",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "LLMQRedis",
                "LLMQBackends",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            path: "Sources/Configuration"
        ),
        // The message contract: what a request entry may hold, what a reply and a dead letter say.
        .target(
            name: "LLMQContract",
            dependencies: ["LLMQRedis", "LLMQBackends", "LLMQConfiguration"],
            path: "Sources/Contract"
        ),
        // What producers and operators run: publishing, queue status, --watch. No worker inside.
        .target(
            name: "LLMQClient",
            dependencies: ["LLMQRedis", "LLMQConfiguration", "LLMQContract"],
            path: "Sources/Client"
        ),
        // The worker service: intake and scheduling, request handling, reply publishing, maintenance.
        .target(
            name: "LLMQWorker",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "LLMQRedis",
                "LLMQBackends",
                "LLMQConfiguration",
                "LLMQContract",
                "LLMQClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/Worker",
            // The Lua scripts, compiled into the binary (`PackageResources.reply_lua`, ...): the
            // release binary is deployed alone, with no resource bundle beside it.
            resources: [
                .embedInCode("Scripts/reply.lua"),
                .embedInCode("Scripts/chunks.lua"),
                .embedInCode("Scripts/claim.lua"),
                .embedInCode("Scripts/touch.lua"),
                .embedInCode("Scripts/delete_idle_consumers.lua"),
                .embedInCode("Scripts/slots_acquire.lua"),
                .embedInCode("Scripts/slots_renew.lua"),
                .embedInCode("Scripts/slots_release.lua"),
                .embedInCode("Scripts/fair_take.lua"),
                .embedInCode("Scripts/fair_release.lua"),
                .embedInCode("Scripts/fair_renew.lua"),
                .embedInCode("Scripts/affinity_home.lua"),
            ]
        ),
        // What operators watch: Prometheus metrics with their help texts, the HTTP listener for
        // /metrics, /healthz and /readyz, and JSON log lines.
        .target(
            name: "LLMQTelemetry",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/Telemetry"
        ),
        // An LLM server simulator speaking llama-server's and Ollama's HTTP APIs.
        .target(
            name: "LLMQSimulator",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                "LLMQWire",
            ],
            path: "Sources/Simulator"
        ),
        .executableTarget(
            name: "llmq",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "LLMQConfiguration",
                "LLMQContract",
                "LLMQClient",
                "LLMQWorker",
                "LLMQSimulator",
                "LLMQTelemetry",
                "LLMQHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/llmq"
        ),
        // What more than one test target uses: scoped fixtures (`ScopedFixture`), the package's
        // folders, temporary files, example configurations.
        .target(
            name: "LLMQTestSupport",
            path: "Tests/Support"
        ),
        .testTarget(
            name: "LLMQTests",
            dependencies: [
                "LLMQTestSupport",
                "LLMQRedis",
                "LLMQHTTP",
                "LLMQBackends",
                "LLMQConfiguration",
                "LLMQContract",
                "LLMQClient",
                "LLMQWorker",
                "LLMQSimulator",
                "LLMQTelemetry",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/LLMQTests"
        ),
        // Pure logic: parsing, configuration, routing, scheduling, selection, decoding. Starts no
        // process and opens no socket, so it runs in seconds (`make test-unit`).
        .testTarget(
            name: "LLMQUnitTests",
            dependencies: [
                "LLMQTestSupport",
                "LLMQRedis",
                "LLMQHTTP",
                "LLMQBackends",
                "LLMQConfiguration",
                "LLMQContract",
                "LLMQClient",
                "LLMQWorker",
                "LLMQTelemetry",
                "LLMQWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "Tests/UnitTests"
        ),
        .testTarget(
            name: "SimulatorTests",
            dependencies: [
                "LLMQTestSupport",
                "LLMQSimulator",
                "LLMQWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            path: "Tests/SimulatorTests"
        ),
    ]
)
