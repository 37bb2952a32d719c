import Foundation
import LLMQRedis

/// What `llmq status` reports: the request stream, the group's backlog and pending entries,
/// each consumer, and the reply and dead-letter streams.
public struct QueueStatus: Sendable, Codable {
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
    public var lag: Int?
    /// Entries delivered and not yet acknowledged.
    public var pending: Int
    public var groupExists: Bool
    public var consumers: [Consumer]
    public var oldestPending: OldestPending?
    public var replies: String
    public var repliesLength: Int
    public var dead: String
    public var deadLength: Int

    /// Reads the status with a few read-only commands.
    public static func read(from client: RedisClient, streams: WorkerConfiguration.Streams) async throws(RedisError) -> QueueStatus {
        let lengths = try await client.pipeline([
            RedisCommand("XLEN", streams.requests), RedisCommand("XLEN", streams.replies), RedisCommand("XLEN", streams.dead),
        ])
        var status = QueueStatus(
            stream: streams.requests, group: streams.group, length: lengths[0].int ?? 0, lag: nil, pending: 0,
            groupExists: false, consumers: [], oldestPending: nil, replies: streams.replies,
            repliesLength: lengths[1].int ?? 0, dead: streams.dead, deadLength: lengths[2].int ?? 0)
        if status.length == 0, try await client.send("EXISTS", streams.requests).int != 1 { return status }

        let groups = try await client.send("XINFO", "GROUPS", streams.requests)
        guard let info = groups.array?.map(Self.dictionary).first(where: { $0["name"]?.string == streams.group }) else {
            return status
        }
        status.groupExists = true
        status.pending = info["pending"]?.int ?? 0
        status.lag = info["lag"]?.int

        let consumers = try await client.send("XINFO", "CONSUMERS", streams.requests, streams.group)
        status.consumers = (consumers.array ?? []).map(Self.dictionary).map { consumer in
            Consumer(
                name: consumer["name"]?.string ?? "?", pending: consumer["pending"]?.int ?? 0,
                idleMilliseconds: consumer["idle"]?.int ?? 0)
        }
        if status.pending > 0 {
            let oldest = try await client.send("XPENDING", streams.requests, streams.group, "-", "+", "1")
            if let row = oldest.array?.first.flatMap(PendingEntry.init) {
                let published = StreamEntry(id: row.id, fields: nil).timestampMilliseconds ?? 0
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                status.oldestPending = OldestPending(
                    id: row.id, consumer: row.consumer, ageMilliseconds: Int(max(0, now - min(published, now))),
                    idleMilliseconds: row.idleMilliseconds, deliveries: row.deliveries)
            }
        }
        return status
    }

    /// XINFO replies are flat name/value arrays in RESP2.
    private static func dictionary(_ value: RESPValue) -> [String: RESPValue] {
        var result: [String: RESPValue] = [:]
        for (name, value) in value.pairs ?? [] {
            if let key = name.string { result[key] = value }
        }
        return result
    }

    /// A table for people.
    public var text: String {
        var lines: [String] = []
        lines.append("stream \(stream): \(length) entries (requests not yet answered)")
        guard groupExists else {
            lines.append("group \(group): not created yet (a worker creates it when it starts)")
            lines.append("replies \(replies): \(repliesLength) entries; dead letters \(dead): \(deadLength) entries")
            return lines.joined(separator: "\n")
        }
        lines.append("group \(group): \(consumers.count) consumers, \(pending) pending, lag \(lag.map(String.init) ?? "unknown")")
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
        lines.append("replies \(replies): \(repliesLength) entries; dead letters \(dead): \(deadLength) entries")
        return lines.joined(separator: "\n")
    }

    private func seconds(_ milliseconds: Int) -> String {
        String(format: "%.1fs", Double(milliseconds) / 1000)
    }
}
