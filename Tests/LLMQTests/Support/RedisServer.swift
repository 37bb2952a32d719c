import Foundation
import Glibc
import LLMQRedis
import LLMQTestSupport

/// A real redis-server on a free loopback port, in a temporary directory of its own.
///
/// Nothing here blocks a thread: Swift's cooperative pool has as many threads as cores (two
/// here), and a test that blocks one in `waitUntilExit` stalls every other test.
final class RedisServer: @unchecked Sendable {
    // @unchecked: `process` is replaced only by `start()`/`restart()`, which a test calls from one task.
    let port: Int
    let directory: URL
    let appendOnly: Bool
    /// Options given after the defaults (so they override them) and before the port, bind
    /// address and directory (which always win).
    let options: [String]
    private var process: Process?

    private init(appendOnly: Bool, options: [String]) throws {
        self.port = try freePort()
        self.appendOnly = appendOnly
        self.options = options
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("llmq-redis-\(port)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// Starts a server and waits until it answers.
    /// - Parameter options: More `redis-server` options, e.g. a compose service's command.
    static func start(appendOnly: Bool = false, options: [String] = []) async throws -> RedisServer {
        let server = try RedisServer(appendOnly: appendOnly, options: options)
        try await server.start()
        return server
    }

    deinit {
        if let process, process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }

    var url: String { "redis://127.0.0.1:\(port)" }
    var configuration: RedisConfiguration { RedisConfiguration(host: "127.0.0.1", port: port) }

    func start() async throws {
        let process = Process()
        process.executableURL = try executable("redis-server")
        // Later options win: the defaults, then `options`, then where it listens and writes.
        process.arguments = [
            "--save", "", "--appendonly", appendOnly ? "yes" : "no", "--appendfsync", "always", "--daemonize", "no",
            "--loglevel", "warning",
        ] + options + ["--port", String(port), "--bind", "127.0.0.1", "--dir", directory.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if (try? await client.send("PING")) == .simpleString("PONG") { return }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("redis-server \(process.arguments ?? []) did not start")
    }

    /// Kills the server at once (SIGKILL: no final save), as a crash would.
    func kill() async {
        await signal(SIGKILL)
    }

    func stop() async {
        await signal(SIGTERM)
    }

    func restart() async throws {
        await kill()
        try await start()
    }

    private func signal(_ signal: Int32) async {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, signal)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    }

    /// Runs redis-cli against this server (to produce requests exactly as users do).
    @discardableResult
    func redisCLI(_ arguments: [String]) async throws -> String {
        try await runProgram("redis-cli", ["-p", String(port)] + arguments).output
    }
}

/// Runs a program to its end without blocking a cooperative thread; returns its exit status and
/// output.
///
/// Its pipes are drained by ``PipeReader`` threads, not `FileHandle.readabilityHandler`: on this
/// toolchain, clearing a readability handler lets libdispatch read the freed source afterwards, a
/// crash that `MALLOC_PERTURB_` makes certain (docs/MISCOMPILE.md, "A second finding").
func runProgram(_ name: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = name.hasPrefix("/") ? URL(fileURLWithPath: name) : try executable(name)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let output = Pipe()
    let error = Pipe()
    process.standardOutput = output
    process.standardError = error
    process.standardInput = FileHandle.nullDevice
    let collected = OutputCollector()
    // Drained while it runs (a child whose pipe is full would never end), to end of file, which
    // comes once the child has ended and our own write ends are closed.
    async let out = PipeReader.readToEnd(output.fileHandleForReading)
    async let err = PipeReader.readToEnd(error.fileHandleForReading)
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        process.terminationHandler = { _ in continuation.resume() }
        do {
            try process.run()
        } catch {
            process.terminationHandler = nil
            continuation.resume()
        }
    }
    try? output.fileHandleForWriting.close()
    try? error.fileHandleForWriting.close()
    collected.append(await out, error: false)
    collected.append(await err, error: true)
    return (process.terminationStatus, collected.output, collected.error)
}

/// Reads a pipe on a thread of its own (a blocking read must not hold a cooperative thread).
enum PipeReader {
    static func readToEnd(_ handle: FileHandle) async -> Data {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: handle.readDataToEndOfFile()) }.start()
        }
    }

    /// Drains `handle` into `collected` as data arrives, until end of file, on a thread of its own.
    static func follow(_ handle: FileHandle, into collected: OutputCollector) {
        Thread {
            while true {
                let data = handle.availableData
                if data.isEmpty { return }
                collected.append(data, error: false)
            }
        }.start()
    }
}

final class OutputCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var out = Data()
    private var err = Data()

    func append(_ data: Data, error: Bool) {
        lock.lock()
        if error { err.append(data) } else { out.append(data) }
        lock.unlock()
    }

    var output: String { lock.lock(); defer { lock.unlock() }; return String(decoding: out, as: UTF8.self) }
    var error: String { lock.lock(); defer { lock.unlock() }; return String(decoding: err, as: UTF8.self) }
}

/// Finds a program on PATH.
func executable(_ name: String) throws -> URL {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    }
    throw TestFailure("\(name) not found on PATH (install redis-server / redis-tools)")
}

/// A TCP port nothing listens on right now.
func freePort() throws -> Int {
    let (fd, port) = try boundLoopbackSocket()
    close(fd)
    return port
}

/// A TCP socket bound to a port of the kernel's choosing on 127.0.0.1, and that port. The
/// caller owns the descriptor.
func boundLoopbackSocket() throws -> (descriptor: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket() failed") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else {
        close(fd)
        throw TestFailure("bind() failed")
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}
