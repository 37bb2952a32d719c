import Foundation
import LLMQConfiguration
import LLMQRedis

/// Publishes requests as a producer would, and waits for their replies.
public struct Publisher: Sendable {
    public let client: RedisClient
    public let streams: WorkerConfiguration.Streams

    public init(client: RedisClient, streams: WorkerConfiguration.Streams) {
        self.client = client
        self.streams = streams
    }

    /// Adds a request entry and returns its entry ID.
    public func publish(_ fields: [(String, String)]) async throws(RedisError) -> String {
        var command = RedisCommand("XADD", streams.requests, "*")
        command.append(fields: fields)
        guard let id = try await client.send(command).string else {
            throw RedisError(.unexpectedReply, "XADD returned no ID")
        }
        return id
    }

    /// Waits for the reply to the request with entry ID `requestID` on `replyStream`.
    /// - Returns: The reply's fields in order, or nil if none arrived within `timeout`.
    public func waitForReply(to requestID: String, on replyStream: String? = nil, timeout: Duration) async throws(RedisError) -> [(String, String)]? {
        // In cluster mode a queue in another slot than the default reply stream has its own.
        let stream = replyStream ?? streams.serving(streams.requests).replies
        // Replies are added after their request on the same server clock, so start just before
        // the request's millisecond.
        let published = StreamEntry(id: requestID, fields: nil).timestampMilliseconds ?? 0
        var cursor = "\(max(0, published - 1))-0"
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for (id, fields) in try await read(stream, after: cursor, until: deadline) {
                cursor = id
                if fields.contains(where: { $0.0 == "request" && $0.1 == requestID }) { return fields }
            }
        }
        return nil
    }

    /// Reads a streamed answer's chunks from `key` as they are written, calling `handle` with
    /// each of the request's chunks (those whose `id` is `id`; a `stream_to` may be shared).
    /// - Returns: The last chunk (`done`), or nil if it did not arrive within `timeout`.
    public func follow(
        _ key: String, id: String, timeout: Duration, _ handle: ([(String, String)]) -> Void
    ) async throws(RedisError) -> [(String, String)]? {
        var cursor = "0-0"
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for (entryID, fields) in try await read(key, after: cursor, until: deadline) {
                cursor = entryID
                guard fields.contains(where: { $0 == ("id", id) }) else { continue }
                handle(fields)
                if fields.contains(where: { $0 == ("done", "1") }) { return fields }
            }
        }
        return nil
    }

    /// Entries of `stream` after `cursor`, waiting up to a second (and not past `deadline`) for some.
    private func read(_ stream: String, after cursor: String, until deadline: ContinuousClock.Instant) async throws(RedisError) -> [(String, [(String, String)])] {
        let block = max(1, min(1000, (deadline - ContinuousClock.now).milliseconds))
        let reply = try await client.send(RedisCommand("XREAD", "COUNT", "1000", "BLOCK", String(block), "STREAMS", stream, cursor))
        return try StreamsReply(decoding: reply).entries.map { entry in
            (entry.id, entry.textFields.map { ($0.name, $0.value) })
        }
    }
}
