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
                "CHiredis",
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            path: "Sources/Redis"
        ),
        // HTTP client over libcurl's multi interface, driven by one thread.
        .target(
            name: "LLMQHTTP",
            dependencies: [
                "CCurl",
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            path: "Sources/HTTP"
        ),
        // LLM backends: OpenAI-compatible (llama-server, vLLM, OpenAI) and Ollama's native API.
        .target(
            name: "LLMQBackends",
            dependencies: [
                "LLMQHTTP",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Backends"
        ),
        // The message contract, configuration, the worker service, status and publishing.
        .target(
            name: "LLMQWorker",
            dependencies: [
                "LLMQRedis",
                "LLMQBackends",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/Worker"
        ),
        // An LLM server simulator speaking llama-server's and Ollama's HTTP APIs.
        .target(
            name: "LLMQSimulator",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Simulator"
        ),
        .executableTarget(
            name: "llmq",
            dependencies: [
                "LLMQWorker",
                "LLMQSimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/llmq"
        ),
        .testTarget(
            name: "LLMQTests",
            dependencies: [
                "LLMQRedis",
                "LLMQHTTP",
                "LLMQBackends",
                "LLMQWorker",
                "LLMQSimulator",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/LLMQTests"
        ),
        .testTarget(
            name: "SimulatorTests",
            dependencies: [
                "LLMQSimulator",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            path: "Tests/SimulatorTests"
        ),
    ]
)
