import Foundation
import LLMQConfiguration
import LLMQRedis

/// What `llmq status` reports: the request stream, the group's backlog and pending entries,
/// each consumer, the reply and dead-letter streams, and the reply counters workers keep.
public struct QueueStatus: Sendable, Codable {
    /// The totals in the stats hash (``WorkerConfiguration/Streams/stats``) that workers
    /// increment with each reply they write. Totals since the hash was created; `llmq status
    /// --watch` turns the difference between two readings into rates.
    public struct ReplyCounts: Sendable, Codable, Hashable {
        /// `replies:ok`: replies with status `ok`.
        public var ok: Int
        /// `replies:error`: replies with status `error`.
        public var error: Int
        /// `error:<code>`, by code (`timeout`, `dead_letter`, ...).
        public var errorsByCode: [String: Int]
        /// `backend:<name>:<status>`: replies by the backend that answered (or failed), to
        /// compare backends (an A/B split) side by side.
        public var byBackend: [String: BackendCounts]

        public struct BackendCounts: Sendable, Codable, Hashable {
            public var ok = 0
            public var error = 0
        }

        /// What a missing hash means: nothing counted yet.
        public static let zero = ReplyCounts(ok: 0, error: 0, errorsByCode: [:])

        public init(ok: Int, error: Int, errorsByCode: [String: Int], byBackend: [String: BackendCounts] = [:]) {
            self.ok = ok
            self.error = error
            self.errorsByCode = errorsByCode
            self.byBackend = byBackend
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                ok: try container.decode(Int.self, forKey: .ok), error: try container.decode(Int.self, forKey: .error),
                errorsByCode: try container.decode([String: Int].self, forKey: .errorsByCode),
                byBackend: try container.decodeIfPresent([String: BackendCounts].self, forKey: .byBackend) ?? [:])
        }

        /// Reads an `HGETALL` reply. Anything but an array (a key of another type answers
        /// with an error) counts as no hash, and a field that is not a whole number >= 0 is
        /// left out, so the rest of the code can trust every count.
        init(hash reply: RESPValue) {
            self = .zero
            for (name, value) in reply.pairs ?? [] {
                guard let field = name.string, let count = value.int, count >= 0 else { continue }
                if field == "replies:ok" {
                    ok = count
                } else if field == "replies:error" {
                    error = count
                } else if field.hasPrefix("error:"), field.count > 6 {
                    errorsByCode[String(field.dropFirst(6))] = count
                } else if field.hasPrefix("backend:"), let colon = field.lastIndex(of: ":"), colon > field.index(field.startIndex, offsetBy: 8) {
                    let name = String(field[field.index(field.startIndex, offsetBy: 8)..<colon])
                    switch field[field.index(after: colon)...] {
                    case "ok": byBackend[name, default: BackendCounts()].ok = count
                    case "error": byBackend[name, default: BackendCounts()].error = count
                    default: break
                    }
                }
            }
        }
    }

    public struct Consumer: Sendable, Codable {
        public var name: String
        /// Entries delivered to it and not yet acknowledged.
        public var pending: Int
        /// Time since its last read or claim.
        public var idleMilliseconds: Int
    }

    public struct OldestPending: Sendable, Codable {
        public var id: String
        public var consumer: String
        /// Time since the entry was published.
        public var ageMilliseconds: Int
        /// Time since it was last delivered.
        public var idleMilliseconds: Int
        public var deliveries: Int
    }

    public var stream: String
    public var group: String
    /// Entries in the request stream: the requests not yet answered (waiting or in flight),
    /// since workers delete each request as they answer it.
    public var length: Int
    /// Entries not yet delivered to any consumer (Redis 7 `lag`); nil when Redis cannot tell.
    ///
    /// Redis 7.0 cannot tell when the entry it delivered last has been deleted while an older one
    /// is still in the stream: workers delete each request as they answer it, so after an
    /// out-of-order answer, until the next read or until the older entry is answered too. KEDA
    /// then reads no lag; see ``lagOrEstimate``.
    public var lag: Int?

    /// ``lag``, or when Redis cannot tell, `length - pending`: every entry up to the last one
    /// delivered was delivered, and answered ones are deleted, so the entries still in the
    /// stream beyond those pending are the undelivered ones. (Exact unless a producer deleted
    /// pending entries.) The `llmq_queue_lag` gauge reports this.
    public var lagOrEstimate: Int {
        lag ?? max(0, length - pending)
    }
    /// Entries delivered and not yet acknowledged.
    public var pending: Int
    public var groupExists: Bool
    public var consumers: [Consumer]
    public var oldestPending: OldestPending?
    public var replies: String
    public var repliesLength: Int
    public var dead: String
    public var deadLength: Int
    /// The stats hash the counts come from.
    public var stats: String
    /// Reply totals from the stats hash; zeros when it does not exist (or is not a hash).
    public var replyCounts: ReplyCounts
    /// Pool slot leases held now, by backend (``WorkerConfiguration/Slots``): requests at each
    /// backend across every worker. Nil when not read (no backends given, or `slots.pool` off).
    public var poolSlotsHeld: [String: Int]?
    /// Under fair intake (`users.fair`), the busiest users of the queue: most in flight and
    /// waiting together, at most ``topUserCount``. Nil when not read.
    public var topUsers: [UserLoad]?
    /// Under fair intake, how many users have requests waiting for their turn. Nil when not read.
    public var usersWaiting: Int?

    /// One user's requests under fair intake ("" is the requests that name no user).
    public struct UserLoad: Sendable, Codable, Hashable {
        public var user: String
        /// Taken by a worker and not yet ended, across the pool.
        public var inFlight: Int
        /// Waiting for the user's turn (or for a user limit to lift).
        public var waiting: Int
    }

    public static let topUserCount = 10

    /// - Parameters:
    ///   - stats: The stats hash's key.
    ///   - replyCounts: Totals read from it.
    public init(
        stream: String, group: String, length: Int, lag: Int?, pending: Int, groupExists: Bool,
        consumers: [Consumer], oldestPending: OldestPending?, replies: String, repliesLength: Int,
        dead: String, deadLength: Int, stats: String = "llmq:stats", replyCounts: ReplyCounts = .zero
    ) {
        self.stream = stream
        self.group = group
        self.length = length
        self.lag = lag
        self.pending = pending
        self.groupExists = groupExists
        self.consumers = consumers
        self.oldestPending = oldestPending
        self.replies = replies
        self.repliesLength = repliesLength
        self.dead = dead
        self.deadLength = deadLength
        self.stats = stats
        self.replyCounts = replyCounts
    }

    /// Decodes the JSON of this version and of versions before `stats` and `replyCounts`
    /// (which then read as the default key and zeros).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            stream: try container.decode(String.self, forKey: .stream),
            group: try container.decode(String.self, forKey: .group),
            length: try container.decode(Int.self, forKey: .length),
            lag: try container.decodeIfPresent(Int.self, forKey: .lag),
            pending: try container.decode(Int.self, forKey: .pending),
            groupExists: try container.decode(Bool.self, forKey: .groupExists),
            consumers: try container.decode([Consumer].self, forKey: .consumers),
            oldestPending: try container.decodeIfPresent(OldestPending.self, forKey: .oldestPending),
            replies: try container.decode(String.self, forKey: .replies),
            repliesLength: try container.decode(Int.self, forKey: .repliesLength),
            dead: try container.decode(String.self, forKey: .dead),
            deadLength: try container.decode(Int.self, forKey: .deadLength),
            stats: try container.decodeIfPresent(String.self, forKey: .stats) ?? "llmq:stats",
            replyCounts: try container.decodeIfPresent(ReplyCounts.self, forKey: .replyCounts) ?? .zero)
        poolSlotsHeld = try container.decodeIfPresent([String: Int].self, forKey: .poolSlotsHeld)
        topUsers = try container.decodeIfPresent([UserLoad].self, forKey: .topUsers)
        usersWaiting = try container.decodeIfPresent(Int.self, forKey: .usersWaiting)
    }

    /// Reads the status with a few read-only commands.
    /// - Parameter backends: Names of the backends whose pool slot leases to count
    ///   (``WorkerConfiguration/backendNames``); none, none counted.
    /// - Parameter fairUsers: Also read the busiest users (``topUsers``), as `users.fair` keeps them.
    public static func read(
        from client: RedisClient, streams: WorkerConfiguration.Streams, backends: [String] = [], fairUsers: Bool = false
    ) async throws(RedisError) -> QueueStatus {
        var status = try await read(from: client, streams: streams)
        if !backends.isEmpty { status.poolSlotsHeld = try await poolSlotsHeld(from: client, prefix: streams.slots, backends: backends) }
        if fairUsers {
            status.topUsers = try await topUsers(from: client, requests: streams.requests)
            let waiting = try await client.send("ZCARD", streams.requests + ":fair:users")
            status.usersWaiting = waiting.errorMessage == nil ? try waiting.decodeInt("ZCARD", "reply") : 0
        }
        return status
    }

    /// Redis's clock in Unix milliseconds, by which leases and marks expire.
    static func redisMilliseconds(_ client: RedisClient) async throws(RedisError) -> String {
        let time = try await client.send("TIME").decodeArray("TIME", "reply")
        guard time.count == 2, let seconds = time[0].string.flatMap(Int.self.init), let micros = time[1].string.flatMap(Int.self.init) else {
            throw RedisError(.unexpectedReply, "TIME: not two whole numbers")
        }
        return String(seconds * 1000 + micros / 1000)
    }

    /// The busiest users of a fair queue: the users waiting (`<requests>:fair:users`, their
    /// waiting lists' lengths) and in flight (`<requests>:fair:busy`, their unexpired running
    /// marks), at most 1,000 of each read.
    static func topUsers(from client: RedisClient, requests: String) async throws(RedisError) -> [UserLoad] {
        let prefix = requests + ":fair:"
        let now = try await redisMilliseconds(client)
        let lists = try await client.pipeline([
            RedisCommand("ZRANGE", prefix + "users", "0", "999"), RedisCommand("ZRANGE", prefix + "busy", "0", "999"),
        ])
        let waitingUsers = lists[0].errorMessage == nil ? try lists[0].decodeStrings("ZRANGE") : []
        let busyUsers = lists[1].errorMessage == nil ? try lists[1].decodeStrings("ZRANGE") : []
        let counts = try await client.pipeline(
            waitingUsers.map { RedisCommand("LLEN", prefix + "waiting:" + $0) }
                + busyUsers.map { RedisCommand("ZCOUNT", prefix + "running:" + $0, "(" + now, "+inf") })
        var loads: [String: UserLoad] = [:]
        for (index, user) in (waitingUsers + busyUsers).enumerated() {
            let count = counts[index].errorMessage == nil ? try counts[index].decodeInt("LLEN/ZCOUNT", "reply") : 0
            var load = loads[user] ?? UserLoad(user: user, inFlight: 0, waiting: 0)
            if index < waitingUsers.count { load.waiting = count } else { load.inFlight = count }
            loads[user] = load
        }
        return loads.values.filter { $0.inFlight + $0.waiting > 0 }
            .sorted { ($0.inFlight + $0.waiting, $1.user) > ($1.inFlight + $1.waiting, $0.user) }
            .prefix(topUserCount).map { $0 }
    }

    /// The leases not yet expired in each backend's sorted set, by Redis's clock.
    static func poolSlotsHeld(from client: RedisClient, prefix: String, backends: [String]) async throws(RedisError) -> [String: Int] {
        let now = try await redisMilliseconds(client)
        let counts = try await client.pipeline(backends.map { RedisCommand("ZCOUNT", prefix + ":" + $0, now, "+inf") })
        var held: [String: Int] = [:]
        for (backend, count) in zip(backends, counts) { held[backend] = count.errorMessage == nil ? try count.decodeInt("ZCOUNT", "reply") : 0 }
        return held
    }

    private static func read(from client: RedisClient, streams: WorkerConfiguration.Streams) async throws(RedisError) -> QueueStatus {
        // Error replies stay in their place in a pipeline: a key of the wrong type reads as absent.
        let first = try await client.pipeline([
            RedisCommand("XLEN", streams.requests), RedisCommand("XLEN", streams.replies), RedisCommand("XLEN", streams.dead),
            RedisCommand("HGETALL", streams.stats),
        ])
        var status = QueueStatus(
            stream: streams.requests, group: streams.group, length: try Self.length(first[0]), lag: nil, pending: 0,
            groupExists: false, consumers: [], oldestPending: nil, replies: streams.replies,
            repliesLength: try Self.length(first[1]), dead: streams.dead, deadLength: try Self.length(first[2]),
            stats: streams.stats, replyCounts: ReplyCounts(hash: first[3]))
        if status.length == 0, try await client.send("EXISTS", streams.requests).int != 1 { return status }

        let groups = try StreamGroupInfo.list(decoding: try await client.send("XINFO", "GROUPS", streams.requests))
        guard let group = groups.first(where: { $0.name == streams.group }) else { return status }
        status.groupExists = true
        status.pending = group.pending
        status.lag = group.lag

        let consumers = try await client.send("XINFO", "CONSUMERS", streams.requests, streams.group)
        status.consumers = try StreamConsumerInfo.list(decoding: consumers).map { consumer in
            Consumer(name: consumer.name, pending: consumer.pending, idleMilliseconds: consumer.idleMilliseconds)
        }
        if status.pending > 0 {
            // Empty when the entries pending a moment ago have been acknowledged since.
            let oldest = try await client.send("XPENDING", streams.requests, streams.group, "-", "+", "1")
            if let row = try PendingEntry.list(decoding: oldest).first {
                let published = StreamEntry(id: row.id, fields: nil).timestampMilliseconds ?? 0
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                status.oldestPending = OldestPending(
                    id: row.id, consumer: row.consumer, ageMilliseconds: Int(max(0, now - min(published, now))),
                    idleMilliseconds: row.idleMilliseconds, deliveries: row.deliveries)
            }
        }
        return status
    }

    /// An `XLEN` answer from a pipeline: an error reply (a key of another type) reads as no
    /// stream, so one bad key does not hide the rest of the status; anything else must be a count.
    private static func length(_ reply: RESPValue) throws(RedisError) -> Int {
        if reply.errorMessage != nil { return 0 }
        return try reply.decodeInt("XLEN", "reply")
    }

    /// A table for people.
    public var text: String {
        var lines: [String] = []
        lines.append("stream \(stream): \(length) entries (requests not yet answered)")
        guard groupExists else {
            lines.append("group \(group): not created yet (a worker creates it when it starts)")
            lines.append(countsLine)
            lines.append("replies \(replies): \(repliesLength) entries; dead letters \(dead): \(deadLength) entries")
            return lines.joined(separator: "\n")
        }
        lines.append("group \(group): \(consumers.count) consumers, \(pending) pending, lag \(lag.map(String.init) ?? "~\(lagOrEstimate) (estimated: Redis cannot tell after out-of-order deletes)")")
        if let oldest = oldestPending {
            lines.append("oldest pending: \(oldest.id) on \(oldest.consumer), age \(seconds(oldest.ageMilliseconds)), idle \(seconds(oldest.idleMilliseconds)), delivered \(oldest.deliveries)x")
        }
        if !consumers.isEmpty {
            let width = max(8, consumers.map(\.name.count).max() ?? 8)
            lines.append("  " + "consumer".padding(toLength: width, withPad: " ", startingAt: 0) + "  pending  idle")
            for consumer in consumers {
                lines.append("  " + consumer.name.padding(toLength: width, withPad: " ", startingAt: 0)
                    + "  " + String(consumer.pending).padding(toLength: 7, withPad: " ", startingAt: 0)
                    + "  " + seconds(consumer.idleMilliseconds))
            }
        }
        lines.append(countsLine)
        if replyCounts.byBackend.count > 1 {
            lines.append("  by backend: " + replyCounts.byBackend.sorted { $0.key < $1.key }.map { name, counts in
                let total = counts.ok + counts.error
                return "\(name) ok \(counts.ok) error \(counts.error) (\(formatShare(total, of: replyCounts.ok + replyCounts.error)))"
            }.joined(separator: ", "))
        }
        lines.append("replies \(replies): \(repliesLength) entries; dead letters \(dead): \(deadLength) entries")
        if let poolSlotsHeld {
            lines.append("pool slots held now (requests at each backend, all workers): "
                + poolSlotsHeld.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if let topUsers {
            lines.append("busiest users (fair intake, all workers): " + (topUsers.isEmpty ? "none" : topUsers.map {
                "\($0.user.isEmpty ? "(no user)" : $0.user) \($0.inFlight) in flight, \($0.waiting) waiting"
            }.joined(separator: "; ")))
        }
        return lines.joined(separator: "\n")
    }

    private var countsLine: String {
        "replies counted in \(stats): ok \(replyCounts.ok), error \(replyCounts.error) (rates: llmq status --watch)"
    }

    private func seconds(_ milliseconds: Int) -> String {
        String(format: "%.1fs", Double(milliseconds) / 1000)
    }
}

/// `part` as a percentage of `whole`, one decimal.
private func formatShare(_ part: Int, of whole: Int) -> String {
    guard whole > 0 else { return "0%" }
    let tenths = (part * 1000 + whole / 2) / whole
    return "\(tenths / 10).\(tenths % 10)%"
}
