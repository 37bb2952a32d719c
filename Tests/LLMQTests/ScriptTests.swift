import Foundation
import Glibc
import LLMQRedis
import LLMQTestSupport
import Testing

/// Runs a script as a shell would: a process started from a Swift task inherits the signal
/// mask of the thread that started it, where SIGTERM is blocked, and the script's own `kill`s
/// of its servers would then do nothing. Python unblocks every signal, then execs the script.
private func runWithSignalsUnblocked(_ script: String, environment: [String: String]) async throws -> (status: Int32, output: String, error: String) {
    try await runProgram(
        "/usr/bin/python3",
        ["-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv(sys.argv[1], sys.argv[1:])", script],
        environment: environment)
}

/// The scripts behind the README's two commands, run as a newcomer runs them.
@Suite("Scripts: make demo and the llama-server build", .serialized)
struct ScriptTests {
    @Test("the demo refuses a Redis port that is taken, and never stops a server it did not start", .withRedis)
    func demoLeavesOtherServersAlone() async throws {
        // The test's redis-server is "someone else's", with a key that must survive the demo.
        let (redis, client) = try RedisFixture.current
        _ = try await client.send("SET", "mine", "untouched")
        var environment = ProcessInfo.processInfo.environment
        environment["LLMQ"] = try llmqExecutable().path
        environment["REDIS_PORT"] = String(redis.port)
        let script = packageRoot.appendingPathComponent("scripts/demo.sh").path

        let refused = try await runWithSignalsUnblocked(script, environment: environment)
        #expect(refused.status == 1)
        #expect(refused.error.contains("already listens on 127.0.0.1:\(redis.port)"), "\(refused.error)")

        // With free ports of its own, the whole demo runs, and the bystander is still there.
        environment["REDIS_PORT"] = nil
        let demo = try await runWithSignalsUnblocked(script, environment: environment)
        #expect(demo.status == 0, "\(demo.output.suffix(1500))\n\(demo.error.suffix(1500))")
        #expect(demo.output.contains("invalid_request"), "the malformed request's reply is shown")
        #expect(try await client.send("GET", "mine").string == "untouched")
    }

    @Test("llama-server.sh build leaves a llama-server that runs: missing library links are made again, in seconds", .enabled(if: LlamaServer.isConfigured))
    func llamaServerBuildRepairsLinks() async throws {
        let binary = try #require(ProcessInfo.processInfo.environment["LLAMA_SERVER_BIN"])
        let libraries = URL(fileURLWithPath: binary).deletingLastPathComponent()
        // The state a fresh `pip install` leaves: the version links the loader needs are missing.
        let links = try FileManager.default.contentsOfDirectory(atPath: libraries.path).filter { name in
            name.hasPrefix("lib") && name.contains(".so")
                && (try? FileManager.default.destinationOfSymbolicLink(atPath: libraries.appendingPathComponent(name).path)) != nil
        }
        #expect(!links.isEmpty, "no library links next to \(binary)")
        for link in links { try FileManager.default.removeItem(at: libraries.appendingPathComponent(link)) }
        #expect(try await runProgram(binary, ["--version"]).status != 0, "without its links llama-server cannot load")

        let cache = try #require(binary.range(of: "/llama-venv/").map { String(binary[..<$0.lowerBound]) })
        var environment = ProcessInfo.processInfo.environment
        environment["LLMQ_CACHE"] = cache
        let started = ContinuousClock.now
        let build = try await runProgram(packageRoot.appendingPathComponent("scripts/llama-server.sh").path, ["build"], environment: environment)
        #expect(build.status == 0, "\(build.error)")
        #expect(build.output.trimmingCharacters(in: .whitespacesAndNewlines) == binary)
        #expect(ContinuousClock.now - started < .seconds(30), "repaired without rebuilding")
        #expect(try await runProgram(binary, ["--version"]).status == 0)
        for link in links {
            #expect(FileManager.default.fileExists(atPath: libraries.appendingPathComponent(link).path), "\(link) not made again")
        }
    }
}
