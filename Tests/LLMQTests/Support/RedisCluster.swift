import Foundation
import Glibc
@testable import LLMQRedis
import LLMQTestSupport

/// A real Redis Cluster on loopback: six redis-servers (three masters, three replicas) on free
/// ports, each in a temporary directory of its own, created with
/// `redis-cli --cluster create ... --cluster-replicas 1`.
///
/// A node's cluster bus listens on its port + 10000, so ports are picked at most 55535 with both
/// free. ``start(nodeTimeout:)`` returns once every node says `cluster_state:ok` and every
/// replica `master_link_status:up` (before that, no replica could take over a dead master).
final class RedisCluster: @unchecked Sendable {
    // @unchecked: `processes` changes only in `start`, `kill` and `stop`, which a test calls from one task.
    let ports: [Int]
    let nodeTimeout: Int
    let directory: URL
    private var processes: [Int: Process] = [:]

    private init(ports: [Int], nodeTimeout: Int) throws {
        self.ports = ports
        self.nodeTimeout = nodeTimeout
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("llmq-cluster-\(ports[0])-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit {
        for process in processes.values where process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts six nodes and creates the cluster; gives up (and stops them) after 60 s.
    /// - Parameter nodeTimeout: `cluster-node-timeout` in milliseconds: how long a master may be
    ///   unreachable before it is considered down and a replica is promoted.
    static func start(nodeTimeout: Int = 2000) async throws -> RedisCluster {
        // A port found free can be taken before the node binds it (another test's connection):
        // then start again on other ports.
        var attempt = 0
        while true {
            attempt += 1
            let cluster = try RedisCluster(ports: try clusterPorts(6), nodeTimeout: nodeTimeout)
            do {
                try await cluster.create()
                return cluster
            } catch {
                await cluster.stop()
                if attempt >= 3 { throw error }
            }
        }
    }

    /// The client configuration: cluster mode, seeded with every node.
    var configuration: RedisConfiguration {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: ports[0])
        configuration.cluster = true
        configuration.clusterNodes = ports.dropFirst().map { RedisNode(host: "127.0.0.1", port: $0) }
        return configuration
    }

    /// `redis://` URL of the first node and the other nodes, as a worker's configuration takes them.
    var url: String { "redis://127.0.0.1:\(ports[0])" }

    private func create() async throws {
        for port in ports { try launch(port) }
        for port in ports { try await waitForPing(port) }
        let create = try await runProgram(
            "redis-cli", ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "1", "--cluster-yes"])
        guard create.status == 0 else { throw TestFailure("redis-cli --cluster create failed: \(create.output) \(create.error)") }
        try await waitUntilHealthy(timeout: .seconds(60))
    }

    private func launch(_ port: Int) throws {
        let nodeDirectory = directory.appendingPathComponent(String(port))
        try FileManager.default.createDirectory(at: nodeDirectory, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = try executable("redis-server")
        process.arguments = [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", String(nodeTimeout),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
            "--port", String(port), "--bind", "127.0.0.1", "--dir", nodeDirectory.path,
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        processes[port] = process
    }

    private func waitForPing(_ port: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if try await cli(port, ["PING"]).hasPrefix("PONG") { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("redis-server on port \(port) did not start")
    }

    /// Waits until every live node says `cluster_state:ok` and sees the same slot map, and
    /// every live replica's link to its master is up.
    func waitUntilHealthy(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            var healthy = true
            for port in livePorts {
                let info = try await cli(port, ["CLUSTER", "INFO"])
                let replication = try await cli(port, ["INFO", "replication"])
                if !info.contains("cluster_state:ok") || (replication.contains("role:slave") && !replication.contains("master_link_status:up")) {
                    healthy = false
                    last = "\(port): \(info.prefix(40)) \(replication.contains("role:slave") ? "replica" : "master")"
                    break
                }
            }
            if healthy, try await Set(livePorts.asyncMap { try await self.masters(askingPort: $0) }).count == 1 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("the cluster did not become healthy: \(last)")
    }

    var livePorts: [Int] { ports.filter { processes[$0]?.isRunning == true } }

    /// The masters by port, each with its slot ranges, as node `port` sees them.
    func masters(askingPort port: Int? = nil) async throws -> [Int: [ClosedRange<Int>]] {
        let client = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: port ?? livePorts[0]))
        defer { client.shutdown() }
        var result: [Int: [ClosedRange<Int>]] = [:]
        for row in try await client.send("CLUSTER", "SLOTS").array ?? [] {
            guard let members = row.array, members.count >= 3, let start = members[0].int, let end = members[1].int,
                let master = members[2].array, master.count >= 2, let masterPort = master[1].int
            else { continue }
            result[masterPort, default: []].append(start...end)
        }
        return result
    }

    /// The port of the master that owns `key`'s slot.
    func masterPort(for key: String) async throws -> Int {
        let slot = HashSlot.of(key)
        guard let port = try await masters().first(where: { $0.value.contains { $0.contains(slot) } })?.key else {
            throw TestFailure("no master owns slot \(slot)")
        }
        return port
    }

    /// The port of a replica of the master on `port` (its `INFO replication` lists them).
    func replicaPorts(of port: Int) async throws -> [Int] {
        let info = try await cli(port, ["INFO", "replication"])
        return info.split(whereSeparator: \.isNewline).compactMap { line in
            guard line.hasPrefix("slave"), let range = line.range(of: "port=") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
    }

    /// Hash tags (`{tag}`) whose slots are owned by `count` different masters.
    func tagsOnDifferentMasters(_ count: Int) async throws -> [String] {
        let masters = try await masters()
        var tags: [String] = []
        var used: Set<Int> = []
        for index in 0..<10_000 where tags.count < count {
            let tag = "q\(index)"
            let slot = HashSlot.of(tag)
            guard let owner = masters.first(where: { $0.value.contains { $0.contains(slot) } })?.key, !used.contains(owner) else { continue }
            used.insert(owner)
            tags.append(tag)
        }
        return tags
    }

    /// Kills the node on `port` at once (SIGKILL), as a crash would.
    func kill(port: Int) async {
        guard let process = processes[port], process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    }

    func stop() async {
        for port in ports { await kill(port: port) }
    }

    /// Runs redis-cli against node `port`.
    @discardableResult
    func cli(_ port: Int, _ arguments: [String]) async throws -> String {
        try await runProgram("redis-cli", ["-p", String(port)] + arguments).output
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}

/// `count` loopback ports that are free, with their cluster-bus ports (+10000), all below
/// the kernel's ephemeral port range.
func clusterPorts(_ count: Int) throws -> [Int] {
    var ports: [Int] = []
    var attempts = 0
    while ports.count < count {
        attempts += 1
        guard attempts < 10_000 else { throw TestFailure("no free ports for a cluster") }
        // Below Linux's ephemeral range (32768...), bus ports included, so that no outgoing
        // connection's local port is picked.
        let port = Int.random(in: 20_000...22_767)
        if ports.contains(port) || ports.contains(port + 10_000) || ports.contains(port - 10_000) { continue }
        if isFree(port) && isFree(port + 10_000) { ports.append(port) }
    }
    return ports
}

/// Whether a TCP port on 127.0.0.1 can be bound now.
private func isFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}
