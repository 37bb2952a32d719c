import Foundation
import Glibc
import LLMQSimulator
import LLMQTestSupport

/// An `llmq sim` process on a free port. Started inside a fixture's scope, it is killed at the
/// test's end.
final class SimProcess: @unchecked Sendable {
    // @unchecked: set once in init.
    let port: Int
    private let process: Process

    init(_ arguments: [String]) async throws {
        port = try freePort()
        process = Process()
        process.executableURL = try llmqExecutable()
        process.arguments = ["sim", "--port", String(port)] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        FixtureScope.atEnd { [self] in kill() }
        _ = try await waitForHTTP("http://127.0.0.1:\(port)/health", status: 200)
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Ends it at once, as a crashed server ends: connections reset, requests in flight lost.
    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// `GET /sim/stats`.
    func stats() async throws -> SimulatorStats {
        let (status, body) = try await httpGet(url + "/sim/stats")
        guard status == 200 else { throw TestFailure("/sim/stats answered \(status)") }
        return try JSONDecoder().decode(SimulatorStats.self, from: Data(body.utf8))
    }

    deinit {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }
}

