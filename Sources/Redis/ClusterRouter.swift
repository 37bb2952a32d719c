import NIOConcurrencyHelpers

/// How a ``RedisClient`` in cluster mode reaches a Redis Cluster: one single-node `RedisClient`
/// per master (each with its own connection and I/O thread, so concurrent callers' commands
/// are still pipelined per node), and the slot map that says which master owns which key.
///
/// - The map comes from `CLUSTER SLOTS`, asked of any node known (masters, replicas and the
///   configured seeds), when it is first needed, after a connection error, and after `MOVED`.
/// - `MOVED slot host:port`: the slot has a new owner for good; the command is sent there and
///   the whole map is read again. `ASK slot host:port`: the slot is being migrated and this key
///   is already on the target; `ASKING` and the command go there together, the map stays.
/// - `TRYAGAIN` (a multi-key command during a migration) and `CLUSTERDOWN` (during a failover)
///   are retried after a short wait. Past ``maxRedirects`` the command fails with a
///   connection error, which callers already retry with backoff.
final class ClusterRouter: Sendable {
    private struct State {
        /// The master of each slot; nil where the map has none.
        var owners: [RedisNode?] = Array(repeating: nil, count: HashSlot.count)
        /// Whether a map was ever read (so that `owners` need not be scanned to know).
        var hasMap = false
        var clients: [RedisNode: RedisClient] = [:]
        /// Every node seen: seeds first, then masters and replicas from the map.
        var known: [RedisNode] = []
        /// The map refresh in progress: concurrent callers wait for the same one.
        var refresh: Task<Void, Never>?
        var isShutdown = false
    }

    /// Redirections and retries allowed per command.
    static let maxRedirects = 8

    private let template: RedisConfiguration
    private let name: String?
    private let state = NIOLockedValueBox(State())

    init(configuration: RedisConfiguration, name: String?) {
        var template = configuration
        template.cluster = false
        template.clusterNodes = []
        self.template = template
        self.name = name
        let seeds = [RedisNode(host: configuration.host, port: configuration.port)] + configuration.clusterNodes
        state.withLockedValue { $0.known = seeds }
    }

    // MARK: - Sending

    func pipeline(_ commands: [RedisCommand]) async throws(RedisError) -> [RESPValue] {
        if !state.withLockedValue({ $0.hasMap }) { await refreshMap() }
        // Route: a command with a key goes to its slot's master; one without (WAIT, SCRIPT
        // LOAD, PING) to the node of the command before it, so `WAIT` follows its write.
        var routes: [(node: RedisNode, indices: [Int])] = []
        var previous: RedisNode?
        for (index, command) in commands.enumerated() {
            let node: RedisNode
            if let slot = ClusterRouting.slot(of: command) {
                node = try await owner(of: slot)
            } else if let previous {
                node = previous
            } else {
                node = try await anyMaster()
            }
            previous = node
            if let position = routes.firstIndex(where: { $0.node == node }) {
                routes[position].indices.append(index)
            } else {
                routes.append((node, [index]))
            }
        }
        var replies = [RESPValue](repeating: .null, count: commands.count)
        if routes.count == 1 {
            replies = try await send(commands, to: routes[0].node)
        } else {
            let results = await withTaskGroup(of: (Int, Result<[RESPValue], RedisError>).self) { group in
                for (position, route) in routes.enumerated() {
                    group.addTask {
                        do throws(RedisError) {
                            return (position, .success(try await self.send(route.indices.map { commands[$0] }, to: route.node)))
                        } catch {
                            return (position, .failure(error))
                        }
                    }
                }
                var results: [(Int, Result<[RESPValue], RedisError>)] = []
                for await result in group { results.append(result) }
                return results
            }
            for (position, result) in results {
                let answered = try result.get()
                for (index, reply) in zip(routes[position].indices, answered) { replies[index] = reply }
            }
        }
        for index in replies.indices where Redirection(replies[index]) != nil {
            replies[index] = try await follow(replies[index], of: commands[index])
        }
        return replies
    }

    /// The node that owns `key`'s slot's commands now (for callers that must group keys by node).
    func node(for key: String) async throws(RedisError) -> RedisNode {
        if !state.withLockedValue({ $0.hasMap }) { await refreshMap() }
        return try await owner(of: HashSlot.of(key))
    }

    func interrupt() {
        for client in state.withLockedValue({ Array($0.clients.values) }) { client.interrupt() }
    }

    func shutdown() {
        let clients = state.withLockedValue { state in
            state.isShutdown = true
            return Array(state.clients.values)
        }
        for client in clients { client.shutdown() }
    }

    /// Sends to one node; a broken connection reads the map again before failing, so that the
    /// caller's retry goes where the slot lives now (a promoted replica after a failover).
    private func send(_ commands: [RedisCommand], to node: RedisNode) async throws(RedisError) -> [RESPValue] {
        do {
            return try await client(for: node).pipeline(commands)
        } catch where error.code == .connection {
            await refreshMap()
            throw error
        }
    }

    /// Follows `MOVED`, `ASK`, `TRYAGAIN` and `CLUSTERDOWN` replies until another reply comes.
    private func follow(_ reply: RESPValue, of command: RedisCommand) async throws(RedisError) -> RESPValue {
        var reply = reply
        var attempts = 0
        while let redirection = Redirection(reply) {
            attempts += 1
            guard attempts <= Self.maxRedirects else {
                throw RedisError(.connection, "cluster: still \(redirection.kind) after \(Self.maxRedirects) tries")
            }
            switch redirection.kind {
            case .moved(let slot, let node):
                state.withLockedValue { $0.owners[slot] = node }
                Task { await self.refreshMap() }
                reply = try await send([command], to: node)[0]
            case .ask(let node):
                reply = try await send([RedisCommand("ASKING"), command], to: node)[1]
            case .tryAgain, .clusterDown:
                try? await Task.sleep(for: .milliseconds(redirection.isClusterDown ? 100 : 20 * attempts))
                if redirection.isClusterDown { await refreshMap() }
                var node = try await anyMaster()
                if let slot = ClusterRouting.slot(of: command) { node = try await owner(of: slot) }
                reply = try await send([command], to: node)[0]
            }
        }
        return reply
    }

    // MARK: - The slot map

    private func owner(of slot: Int) async throws(RedisError) -> RedisNode {
        if let node = state.withLockedValue({ $0.owners[slot] }) { return node }
        await refreshMap()
        if let node = state.withLockedValue({ $0.owners[slot] }) { return node }
        throw RedisError(.connection, "cluster: no master serves slot \(slot) (is the cluster up?)")
    }

    private func anyMaster() async throws(RedisError) -> RedisNode {
        if let node = state.withLockedValue({ $0.owners.lazy.compactMap { $0 }.first }) { return node }
        await refreshMap()
        if let node = state.withLockedValue({ $0.owners.lazy.compactMap { $0 }.first }) { return node }
        throw RedisError(.connection, "cluster: no node of \(state.withLockedValue { $0.known }) answered CLUSTER SLOTS")
    }

    private func client(for node: RedisNode) throws(RedisError) -> RedisClient {
        let client: RedisClient? = state.withLockedValue { state in
            if state.isShutdown { return nil }
            if let client = state.clients[node] { return client }
            var configuration = template
            configuration.host = node.host
            configuration.port = node.port
            let client = RedisClient(configuration: configuration, name: name)
            state.clients[node] = client
            return client
        }
        guard let client else { throw RedisError(.shutdown, "client is shut down") }
        return client
    }

    /// Reads the map again (one read at a time; callers arriving meanwhile wait for it).
    func refreshMap() async {
        let task: Task<Void, Never>? = state.withLockedValue { state in
            if state.isShutdown { return nil }
            if let running = state.refresh { return running }
            let task = Task { await self.loadMap() }
            state.refresh = task
            return task
        }
        await task?.value
    }

    /// Asks the masters of the current map, then every other known node, for `CLUSTER SLOTS`,
    /// and takes the first answer.
    private func loadMap() async {
        defer { state.withLockedValue { $0.refresh = nil } }
        let candidates: [RedisNode] = state.withLockedValue { state in
            var seen = Set<RedisNode>()
            return (state.owners.compactMap { $0 } + state.known).filter { seen.insert($0).inserted }
        }
        for node in candidates {
            // A node that cannot answer, or answers with a malformed map, is skipped for the next.
            guard let client = try? client(for: node), let reply = try? await client.send("CLUSTER", "SLOTS"),
                let slots = try? ClusterSlots(decoding: reply), let map = ClusterRouting.slotMap(slots, askedAt: node)
            else { continue }
            state.withLockedValue { state in
                state.owners = map.owners
                state.hasMap = true
                for node in map.nodes where !state.known.contains(node) { state.known.append(node) }
            }
            return
        }
    }
}

/// A reply that sends the command elsewhere, or asks for it again later.
struct Redirection {
    enum Kind: CustomStringConvertible {
        case moved(slot: Int, node: RedisNode)
        case ask(node: RedisNode)
        case tryAgain
        case clusterDown

        var description: String {
            switch self {
            case .moved(let slot, let node): "MOVED \(slot) \(node)"
            case .ask(let node): "ASK \(node)"
            case .tryAgain: "TRYAGAIN"
            case .clusterDown: "CLUSTERDOWN"
            }
        }
    }

    var kind: Kind
    var isClusterDown: Bool {
        if case .clusterDown = kind { return true }
        return false
    }

    /// Nil unless `reply` is a `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN` error.
    init?(_ reply: RESPValue) {
        guard let message = reply.errorMessage else { return nil }
        let words = message.split(separator: " ")
        switch words.first {
        case "MOVED", "ASK":
            guard words.count >= 3, let slot = Int(words[1]), (0..<HashSlot.count).contains(slot),
                let node = RedisNode(String(words[2]))
            else { return nil }
            kind = words[0] == "MOVED" ? .moved(slot: slot, node: node) : .ask(node: node)
        case "TRYAGAIN":
            kind = .tryAgain
        case "CLUSTERDOWN":
            kind = .clusterDown
        default:
            return nil
        }
    }
}

/// Which key a command is about, and the cluster's answer to `CLUSTER SLOTS`.
enum ClusterRouting {
    /// Commands without a key: they go to the node of the command before them in a pipeline.
    private static let keyless: Set<String> = [
        "PING", "INFO", "SCRIPT", "CLUSTER", "WAIT", "CLIENT", "TIME", "CONFIG", "DBSIZE", "FLUSHALL",
        "FLUSHDB", "ASKING", "READONLY", "READWRITE", "HELLO", "AUTH", "SELECT", "ECHO", "COMMAND",
        "SCAN", "KEYS", "FUNCTION", "MULTI", "EXEC", "DISCARD", "LASTSAVE", "ROLE", "SLOWLOG", "MEMORY",
    ]

    /// The slot of the command's first key; nil for a command without one. Multi-key commands
    /// (`XREADGROUP ... STREAMS a b`) go by their first key: keys in other slots are the
    /// caller's to split, or Redis answers `CROSSSLOT`.
    static func slot(of command: RedisCommand) -> Int? {
        guard command.argumentCount > 0 else { return nil }
        let name = String(decoding: command.argument(0), as: UTF8.self).uppercased()
        if keyless.contains(name) { return nil }
        let position: Int
        switch name {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard command.argumentCount > 3, let count = Int(String(decoding: command.argument(2), as: UTF8.self)), count > 0
            else { return nil }
            position = 3
        case "XREAD", "XREADGROUP":
            guard let streams = (1..<command.argumentCount).first(where: {
                String(decoding: command.argument($0), as: UTF8.self).uppercased() == "STREAMS"
            }) else { return nil }
            position = streams + 1
        case "XGROUP", "XINFO", "OBJECT":
            position = 2
        default:
            position = 1
        }
        guard position < command.argumentCount else { return nil }
        return HashSlot.of(bytes: command.argument(position))
    }

    /// A parsed `CLUSTER SLOTS` reply: each slot's master, and every node named.
    struct SlotMap {
        var owners: [RedisNode?]
        var nodes: [RedisNode]
    }

    /// The slot map of a `CLUSTER SLOTS` reply. A node announced without a host (`""` or `?`)
    /// is reached at the address asked; one without a port (0: not reachable over plain TCP)
    /// is left out. Nil when the map has no range, or a range's master cannot be reached.
    static func slotMap(_ slots: ClusterSlots, askedAt asked: RedisNode) -> SlotMap? {
        guard !slots.ranges.isEmpty else { return nil }
        var owners = [RedisNode?](repeating: nil, count: HashSlot.count)
        var nodes: [RedisNode] = []
        func address(_ node: ClusterSlots.Node) -> RedisNode? {
            guard node.port > 0 else { return nil }
            return RedisNode(host: node.host.isEmpty || node.host == "?" ? asked.host : node.host, port: node.port)
        }
        for range in slots.ranges {
            guard let master = address(range.master) else { return nil }
            for slot in range.slots { owners[slot] = master }
            for node in [master] + range.replicas.compactMap(address) where !nodes.contains(node) { nodes.append(node) }
        }
        return SlotMap(owners: owners, nodes: nodes)
    }
}

extension RedisCommand {
    /// The bytes of argument `index`.
    func argument(_ index: Int) -> ArraySlice<UInt8> {
        let start = lengths[..<index].reduce(0, +)
        return storage[start..<start + lengths[index]]
    }
}
