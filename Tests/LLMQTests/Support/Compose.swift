import Foundation
import Glibc
import LLMQRedis
import LLMQTestSupport

/// docker-compose.yml as `docker-compose config` resolves it: variables substituted from the
/// file's defaults and the `.env` file next to it, as `docker compose up` would start it.
///
/// There is no Docker engine where the tests run, so the tests start each service as a local
/// process instead, from what this says: a compose change that would crash-loop a container
/// fails a test.
struct ComposeFile {
    /// One service of the resolved file.
    struct Service {
        let name: String
        /// The `command` list (arguments to the image's entrypoint); nil when the image's default runs.
        let command: [String]?
        /// The `environment`; a nil value (a name given without a value, not set where compose
        /// runs) is left unset in the container.
        let environment: [String: String?]
        /// The services this one waits for (`depends_on`).
        let dependsOn: [String]
        /// The healthcheck's `test` list (`["CMD", program, arguments...]`), if any.
        let healthcheck: [String]?

        /// The value following `option` in the command (`--port 8080`), if any.
        func commandOption(_ option: String) -> String? {
            guard let command, let index = command.firstIndex(of: option), index + 1 < command.count else { return nil }
            return command[index + 1]
        }
    }

    let services: [String: Service]

    /// Runs `docker-compose -f docker-compose.yml config` and parses what it prints.
    ///
    /// The environment compose sees holds only PATH, HOME and the locale, so the test checks
    /// what the file and its `.env` say, not what the shell running the tests happens to export.
    static func load(_ file: URL = packageRoot.appendingPathComponent("docker-compose.yml")) async throws -> ComposeFile {
        guard let compose = try? executable("docker-compose") else {
            throw TestFailure("docker-compose is not installed (apt-get install docker-compose; .ci/run does): the compose tests need it to resolve \(file.lastPathComponent)")
        }
        let inherited = ProcessInfo.processInfo.environment
        let environment = inherited.filter { ["PATH", "HOME", "LANG", "LC_ALL"].contains($0.key) }
        let resolved = try await runProgram(compose.path, ["-f", file.path, "config"], environment: environment)
        guard resolved.status == 0 else {
            throw TestFailure("docker-compose -f \(file.path) config failed (exit \(resolved.status)): \(resolved.error)")
        }
        // Debian's python3-yaml comes with docker-compose; `python3` on PATH may be another
        // interpreter without yaml.
        let parsed = try await runProgram(
            "/usr/bin/python3", ["-c", "import sys, yaml, json; json.dump(yaml.safe_load(sys.argv[1]), sys.stdout)", resolved.output])
        guard parsed.status == 0 else {
            throw TestFailure("/usr/bin/python3 could not parse docker-compose's output as YAML (python3-yaml missing?): \(parsed.error)")
        }
        guard let root = try JSONSerialization.jsonObject(with: Data(parsed.output.utf8)) as? [String: Any],
            let services = root["services"] as? [String: Any]
        else { throw TestFailure("docker-compose config printed no services:\n\(resolved.output)") }
        return ComposeFile(services: try services.reduce(into: [:]) { result, item in
            guard let service = item.value as? [String: Any] else { throw TestFailure("service \(item.key) is not a mapping") }
            result[item.key] = try Service(name: item.key, service)
        })
    }

    func service(_ name: String) throws -> Service {
        guard let service = services[name] else {
            throw TestFailure("docker-compose.yml has no service \(name) (it has \(services.keys.sorted().joined(separator: ", ")))")
        }
        return service
    }
}

extension ComposeFile.Service {
    init(name: String, _ dictionary: [String: Any]) throws {
        self.name = name
        switch dictionary["command"] {
        case nil: command = nil
        case let list as [Any]: command = list.map(Self.text)
        // Compose splits a string command as a shell would; the file uses lists, spaces suffice.
        case let string as String: command = string.split(separator: " ").map(String.init)
        case let other?: throw TestFailure("service \(name): command has an unexpected shape: \(other)")
        }
        // `config` prints the environment as a mapping, whichever form the file uses.
        let environment = dictionary["environment"] as? [String: Any] ?? [:]
        self.environment = environment.mapValues { $0 is NSNull ? nil : Self.text($0) }
        switch dictionary["depends_on"] {
        case let mapping as [String: Any]: dependsOn = mapping.keys.sorted()
        case let list as [Any]: dependsOn = list.map(Self.text)
        default: dependsOn = []
        }
        healthcheck = ((dictionary["healthcheck"] as? [String: Any])?["test"] as? [Any])?.map(Self.text)
    }

    private static func text(_ value: Any) -> String {
        if let string = value as? String { return string }
        if let number = value as? NSNumber { return number.stringValue }
        return "\(value)"
    }
}

/// A compose service played by a local process: `service:containerPort` becomes `127.0.0.1:port`.
struct ComposeStandIn {
    /// The service name, which is also its host name on the compose network.
    var service: String
    /// The port the service listens on inside its container.
    var containerPort: Int
    /// The loopback port of the local process standing in for it.
    var port: Int
}

extension ComposeFile.Service {
    /// This service's environment as its container gets it, with every URL that names another
    /// service pointed at that service's stand-in. Unset names are left out.
    /// - Throws: When a URL names a service that has no stand-in, or a port that service does
    ///   not listen on (a container would fail to connect the same way).
    func localEnvironment(standIns: [ComposeStandIn], services: [String]) throws -> [String: String] {
        var result: [String: String] = [:]
        for (key, value) in environment {
            guard let value else { continue }
            guard var url = URLComponents(string: value), let scheme = url.scheme, let host = url.host, services.contains(host) else {
                result[key] = value
                continue
            }
            guard let standIn = standIns.first(where: { $0.service == host }) else {
                throw TestFailure("\(name): \(key)=\(value) names the service \(host), which the test does not start")
            }
            let port = url.port ?? ["redis": 6379, "http": 80, "https": 443][scheme]
            guard port == standIn.containerPort else {
                throw TestFailure("\(name): \(key)=\(value), but \(host) listens on port \(standIn.containerPort)")
            }
            url.host = "127.0.0.1"
            url.port = standIn.port
            result[key] = url.string
        }
        return result
    }
}

/// Like ``waitForReplies(_:count:stream:timeout:)``, but fails at once, with the worker's
/// output, when one of `workers` exits: a worker that crashes at start would otherwise show
/// only as missing replies.
func waitForReplies(_ client: RedisClient, count: Int, workers: [WorkerProcess], timeout: Duration = .seconds(30)) async throws -> [[String: String]] {
    let deadline = ContinuousClock.now + timeout
    while true {
        for worker in workers where !worker.isRunning {
            let status = await worker.waitForExit(timeout: .seconds(1)).map { "\($0)" } ?? "?"
            throw TestFailure("worker \(worker.name) exited with status \(status):\n\(worker.output.suffix(2000))")
        }
        let replies = try await readReplies(client)
        if replies.count >= count { return replies }
        if ContinuousClock.now > deadline {
            let logs = workers.map { "\($0.name):\n\($0.output.suffix(1000))" }.joined(separator: "\n")
            throw TestFailure("only \(replies.count) of \(count) replies after \(timeout); worker output:\n\(logs)")
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}
