import Foundation
import Glibc
import LLMQTestSupport

/// The `llmq` executable: `LLMQ_BIN` when set (the release binary, for `make soak`), else the
/// one SwiftPM built next to this test bundle.
func llmqExecutable() throws -> URL {
    if let path = ProcessInfo.processInfo.environment["LLMQ_BIN"], !path.isEmpty {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        guard FileManager.default.isExecutableFile(atPath: url.path) else { throw TestFailure("LLMQ_BIN=\(path) is not an executable") }
        return url
    }
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var directory = bundle.deletingLastPathComponent()
    // On Linux the runner is `.build/<triple>/debug/<package>PackageTests.xctest`.
    for _ in 0..<3 {
        let candidate = directory.appendingPathComponent("llmq")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    throw TestFailure("llmq executable not found near \(bundle.path); run `swift build` first")
}

/// An `llmq worker` process, configured by environment as operators do, that a test can
/// SIGKILL or SIGTERM. Started inside a fixture's scope, it is killed at the test's end if it
/// still runs.
final class WorkerProcess: @unchecked Sendable {
    // @unchecked: `process` is only replaced by `start()`, called from one task.
    let name: String
    let environment: [String: String]
    private var process: Process?
    private var log: FileHandle?
    let logPath: String

    /// Arguments after `llmq`; nil means `worker --consumer NAME`.
    let arguments: [String]?

    /// Starts `llmq` with `environment` over this process's (without its `LLMQ_*` variables).
    @discardableResult
    static func start(name: String, environment: [String: String], arguments: [String]? = nil) throws -> WorkerProcess {
        try WorkerProcess(name: name, environment: environment, arguments: arguments)
    }

    private init(name: String, environment: [String: String], arguments: [String]? = nil) throws {
        self.name = name
        self.environment = environment
        self.arguments = arguments
        self.logPath = FileManager.default.temporaryDirectory.appendingPathComponent("llmq-\(name)-\(UUID().uuidString.prefix(6)).log").path
        try start()
        FixtureScope.atEnd { [self] in
            signal(SIGKILL)
            _ = await waitForExit(timeout: .seconds(5))
        }
    }

    deinit {
        if let process, process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }

    /// Starts (again, after a kill) the process.
    func start() throws {
        let process = Process()
        process.executableURL = try llmqExecutable()
        process.arguments = arguments ?? ["worker", "--consumer", name]
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LLMQ_") }
        environment.merge(self.environment) { $1 }
        process.environment = environment
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        self.log = log
    }

    var isRunning: Bool { process?.isRunning ?? false }

    func signal(_ signal: Int32) {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, signal)
    }

    /// Waits for the process to exit and returns its status (nil after `timeout`).
    func waitForExit(timeout: Duration = .seconds(30)) async -> Int32? {
        guard let process else { return nil }
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline { return nil }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return process.terminationStatus
    }

    var output: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }
}

/// The environment of an `llmq worker` process serving `redis` from the llama-server (or
/// simulator) at `endpoint`, as operators configure one, with `settings` over it (later ones win).
func workerEnvironment(redis: RedisServer, endpoint: String, _ settings: [String: String]...) -> [String: String] {
    var environment = [
        "LLMQ_REDIS_URL": redis.url, "LLMQ_BACKEND_TYPE": "llama-cpp", "LLMQ_BACKEND_ENDPOINT": endpoint, "LLMQ_READ_BLOCK_MS": "200",
    ]
    for more in settings { environment.merge(more) { $1 } }
    return environment
}

/// Settings by which a worker takes over another's entry idle for 1.5 s (looking every 250 ms):
/// what a killed or stalled worker held is taken over within seconds.
let quickTakeover = ["LLMQ_RECOVERY_CLAIM_MIN_IDLE_MS": "1500", "LLMQ_RECOVERY_CLAIM_INTERVAL_MS": "250"]

/// Runs `llmq ARGUMENTS` to its end with `environment` over this process's (without its
/// `LLMQ_*` variables); returns the exit status and what it printed.
func runLLMQ(_ arguments: [String], environment: [String: String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = try llmqExecutable()
    process.arguments = arguments
    var merged = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LLMQ_") }
    merged.merge(environment) { $1 }
    process.environment = merged
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}
