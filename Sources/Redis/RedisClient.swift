import DequeModule
import Foundation
import Metrics

/// A Redis client with one connection and one I/O thread of its own.
///
/// hiredis's calls block, and blocking calls must never run on Swift's cooperative thread pool,
/// so every command is handed to the client's thread. Commands submitted while the thread is
/// busy are written together and their replies read in order: concurrent callers are pipelined
/// automatically, one round trip for many commands.
///
/// A blocking command (`XREADGROUP ... BLOCK`) holds the connection until it returns, so give
/// blocking readers a client of their own. A broken connection fails the commands in flight with
/// ``RedisError/Code/connection`` and is re-established on the next command; retrying with
/// backoff is the caller's choice.
///
/// With ``RedisConfiguration/cluster`` set, the client speaks to a Redis Cluster instead: it
/// keeps one such single-node client per master and sends each command to the master of its
/// key's slot, following redirections (see `ClusterRouter`). Callers use it the same way; keys
/// of one command (or one script) must share a slot.
public final class RedisClient: Sendable {
    private struct Batch {
        var commands: [RedisCommand]
        /// Called once, on the client's thread, with the replies or the failure.
        var complete: @Sendable (Result<[RESPValue], RedisError>) -> Void
    }

    private struct State {
        var queue: Deque<Batch> = []
        var isShutdown = false
        /// The connected socket, kept under the lock so that ``interrupt()`` never shuts down
        /// a descriptor that was already closed and reused.
        var fileDescriptor: Int32?
    }

    public let configuration: RedisConfiguration
    private let clientName: String?
    // NSCondition is Sendable; `state` is only touched while holding it.
    private let condition = NSCondition()
    nonisolated(unsafe) private var state = State()
    /// Set in cluster mode, where this client has no connection of its own.
    private let router: ClusterRouter?

    /// - Parameters:
    ///   - configuration: Where to connect.
    ///   - name: Sent as `CLIENT SETNAME`, so operators can tell connections apart in `CLIENT LIST`.
    public init(configuration: RedisConfiguration, name: String? = nil) {
        self.configuration = configuration
        self.clientName = name.map { $0.replacingOccurrences(of: " ", with: "_") }
        if configuration.cluster {
            router = ClusterRouter(configuration: configuration, name: clientName)
            return
        }
        router = nil
        let thread = Thread { [self] in self.runLoop() }
        thread.name = "llmq-redis"
        thread.start()
    }

    /// Sends one command and returns its reply.
    /// - Throws: ``RedisError`` with code `.server` for an error reply, `.connection` when the
    ///   connection failed, `.shutdown` after ``shutdown()``.
    public func send(_ command: RedisCommand) async throws(RedisError) -> RESPValue {
        let reply = try await pipeline([command])[0]
        if case .error(let message) = reply {
            throw RedisError(.server, message)
        }
        return reply
    }

    public func send(_ arguments: String...) async throws(RedisError) -> RESPValue {
        try await send(RedisCommand(arguments))
    }

    /// Sends several commands in one round trip. Error replies are returned as
    /// ``RESPValue/error(_:)`` in their place; only connection failures throw.
    public func pipeline(_ commands: [RedisCommand]) async throws(RedisError) -> [RESPValue] {
        if commands.isEmpty { return [] }
        if let router { return try await router.pipeline(commands) }
        let result = await withCheckedContinuation { continuation in
            enqueue(commands) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Sends several commands in one round trip without waiting: `completion` runs on the
    /// client's thread with the replies (error replies in their place) or the connection's
    /// failure. For callers that must not pay a task switch per command (a streamed answer's
    /// chunks); it must return quickly, as the client's other commands wait for it.
    public func enqueue(_ commands: [RedisCommand], completion: @escaping @Sendable (Result<[RESPValue], RedisError>) -> Void) {
        if let router {
            // In cluster mode each command goes to its slot's master, through a task.
            Task {
                do throws(RedisError) {
                    completion(.success(try await router.pipeline(commands)))
                } catch {
                    completion(.failure(error))
                }
            }
            return
        }
        condition.lock()
        if state.isShutdown {
            condition.unlock()
            completion(.failure(RedisError(.shutdown, "client is shut down")))
            return
        }
        state.queue.append(Batch(commands: commands, complete: completion))
        condition.signal()
        condition.unlock()
    }

    /// Sends a command that names no key (`WAIT`) to the server that holds `key`: in cluster
    /// mode its slot's master, on the same connection as the commands about `key` before it.
    public func send(_ command: RedisCommand, onNodeOf key: String) async throws(RedisError) -> RESPValue {
        guard let router else { return try await send(command) }
        // A harmless command about `key` leads, and the keyless one follows it to that node.
        let replies = try await router.pipeline([RedisCommand("TYPE", key), command])
        if case .error(let message) = replies[1] { throw RedisError(.server, message) }
        return replies[1]
    }

    /// Groups keys by the server that holds them (in cluster mode, by master; else one group),
    /// for multi-key commands such as `XREADGROUP ... STREAMS a b`, whose keys must be on one node.
    public func groupByNode(_ keys: [String]) async throws(RedisError) -> [[String]] {
        guard let router else { return keys.isEmpty ? [] : [keys] }
        var groups: [(node: RedisNode, keys: [String])] = []
        for key in keys {
            let node = try await router.node(for: key)
            if let index = groups.firstIndex(where: { $0.node == node }) {
                groups[index].keys.append(key)
            } else {
                groups.append((node, [key]))
            }
        }
        return groups.map(\.keys)
    }

    /// Interrupts a command that is blocked waiting for the server (shutting down its socket):
    /// it fails with a connection error, and the next command reconnects.
    public func interrupt() {
        if let router { return router.interrupt() }
        condition.lock()
        if let fileDescriptor = state.fileDescriptor { shutdownSocket(fileDescriptor) }
        condition.unlock()
    }

    /// Fails queued commands, interrupts the running one, closes the connection and stops the
    /// I/O thread. Call it when done: the thread keeps the client alive until then.
    public func shutdown() {
        if let router { return router.shutdown() }
        condition.lock()
        state.isShutdown = true
        if let fileDescriptor = state.fileDescriptor { shutdownSocket(fileDescriptor) }
        condition.broadcast()
        condition.unlock()
    }

    // MARK: - I/O thread

    private func runLoop() {
        var connection: RedisConnection?
        var hasConnected = false
        while true {
            condition.lock()
            while state.queue.isEmpty && !state.isShutdown {
                condition.wait()
            }
            if state.isShutdown {
                let abandoned = state.queue
                state.queue.removeAll()
                state.fileDescriptor = nil
                condition.unlock()
                for batch in abandoned {
                    batch.complete(.failure(RedisError(.shutdown, "client is shut down")))
                }
                return
            }
            let batches = Array(state.queue)
            state.queue.removeAll(keepingCapacity: true)
            condition.unlock()

            if connection == nil {
                do {
                    let connected = try RedisConnection(configuration: configuration, clientName: clientName)
                    connection = connected
                    if hasConnected { Counter(label: "llmq_redis_reconnects_total").increment() }
                    hasConnected = true
                    condition.lock()
                    state.fileDescriptor = connected.fileDescriptor
                    condition.unlock()
                } catch {
                    for batch in batches { batch.complete(.failure(error)) }
                    continue
                }
            }
            if !execute(batches, on: connection!) {
                // The connection is unusable after an I/O error: drop it, reconnect on demand.
                condition.lock()
                state.fileDescriptor = nil
                condition.unlock()
                connection = nil
            }
        }
    }

    /// Writes every command of every batch, then reads the replies in order and completes the
    /// batches. Returns false if an I/O error broke the connection (the batches not yet answered
    /// fail with it).
    private func execute(_ batches: [Batch], on connection: RedisConnection) -> Bool {
        var index = 0
        do throws(RedisError) {
            for batch in batches {
                for command in batch.commands { try connection.append(command) }
            }
            while index < batches.count {
                var replies: [RESPValue] = []
                replies.reserveCapacity(batches[index].commands.count)
                for _ in batches[index].commands {
                    replies.append(try connection.readReply())
                }
                batches[index].complete(.success(replies))
                index += 1
            }
            return true
        } catch {
            for batch in batches[index...] { batch.complete(.failure(error)) }
            return false
        }
    }
}
