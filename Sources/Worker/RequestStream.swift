import Foundation
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import Metrics
import NIOConcurrencyHelpers

/// The Redis side of a worker: reading from the group, replying, claiming, refreshing, on
/// each of its queues' request streams (every method takes the stream it works on).
///
/// Two connections: a blocking `XREADGROUP` holds its connection until entries arrive, so it
/// gets one of its own; replies, acknowledgements and claims share the other, where concurrent
/// requests' commands are pipelined together.
///
/// In cluster mode both are cluster clients (a connection per master each): commands go to the
/// master of their stream's slot, a blocking read over streams on several masters is one read
/// per master, and each queue is answered with the reply, dead-letter and stats keys of its slot
/// (``WorkerConfiguration/Streams/serving(_:)``).
final class RequestStream: Sendable {
    let streams: WorkerConfiguration.Streams
    let consumer: String
    let reader: RedisClient
    let writer: RedisClient
    /// `WAIT` for this many replicas after each reply (`redis.waitReplicas`); 0 does not wait.
    let waitReplicas: Int
    let waitTimeout: Duration
    /// Per request stream: until when replies skip `WAIT` (see `waitForReplicas(of:)`).
    let waitPausedUntil = NIOLockedValueBox<[String: ContinuousClock.Instant]>([:])
    /// One `WAIT` in flight per request stream, shared by the replies written before it.
    let replicationWaits = ReplicationWaits()

    init(redis: RedisConfiguration, streams: WorkerConfiguration.Streams, consumer: String, readBlock: Duration) {
        self.streams = streams
        self.consumer = consumer
        var readerConfiguration = redis
        readerConfiguration.commandTimeout = readBlock + redis.commandTimeout
        self.reader = RedisClient(configuration: readerConfiguration, name: "llmq-read:\(consumer)")
        self.writer = RedisClient(configuration: redis, name: "llmq-write:\(consumer)")
        self.waitReplicas = redis.waitReplicas
        self.waitTimeout = redis.waitTimeout
    }

    /// A blocking read over streams on several cluster masters waits at most this long, since
    /// each master's read must end before the entries of any are handed out.
    static let clusterReadBlock: Duration = .milliseconds(200)

    func shutdown() {
        reader.shutdown()
        writer.shutdown()
    }

    /// Creates the group (and the stream) if missing. A new group starts at `0`, so requests
    /// published before any worker existed are served too.
    func ensureGroup(on requests: String) async throws(RedisError) {
        do {
            _ = try await writer.send("XGROUP", "CREATE", requests, streams.group, "0", "MKSTREAM")
        } catch where error.isServerError("BUSYGROUP") {
            // Another worker created it first.
        }
    }

    /// New entries for this consumer, waiting up to `block` for some to arrive (on any of the
    /// streams; `COUNT` applies to each stream).
    /// - Returns: The entries by stream.
    func readNew(from requests: [String], count: Int, block: Duration) async throws(RedisError) -> [String: [StreamEntry]] {
        func read(_ requests: [String], block: Duration) async throws(RedisError) -> [String: [StreamEntry]] {
            var command = RedisCommand(
                "XREADGROUP", "GROUP", streams.group, consumer, "COUNT", String(count),
                "BLOCK", String(block.milliseconds), "STREAMS")
            for stream in requests { command.append(stream) }
            for _ in requests { command.append(">") }
            return try StreamsReply(decoding: try await reader.send(command), command: "XREADGROUP").entriesByStream
        }
        let groups = try await reader.groupByNode(requests)
        if groups.count <= 1 { return try await read(requests, block: block) }
        // Streams on several cluster masters: one read per master, at once. Each is allowed a
        // short block only, since the entries one master returns wait for the others' reads.
        let short = min(block, Self.clusterReadBlock)
        let results = await withTaskGroup(of: Result<[String: [StreamEntry]], RedisError>.self) { group in
            for streams in groups {
                group.addTask {
                    do throws(RedisError) {
                        return .success(try await read(streams, block: short))
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var results: [Result<[String: [StreamEntry]], RedisError>] = []
            for await result in group { results.append(result) }
            return results
        }
        var entries: [String: [StreamEntry]] = [:]
        var failure: RedisError?
        for result in results {
            switch result {
            case .success(let read): entries.merge(read) { $0 + $1 }
            case .failure(let error): failure = error
            }
        }
        // Entries read are in this consumer's pending list now: hand them out even if another
        // master's read failed (the next read reports that failure again).
        if let failure, entries.isEmpty { throw failure }
        return entries
    }

    /// New entries from several streams at once without waiting, `counts` being how many to
    /// take from each (one pipelined `XREADGROUP` per stream, since `COUNT` is per stream).
    /// - Returns: The entries by stream; a stream with none is missing.
    func readAvailable(_ counts: [(stream: String, count: Int)]) async throws(RedisError) -> [String: [StreamEntry]] {
        let commands = counts.map { request in
            RedisCommand(
                "XREADGROUP", "GROUP", streams.group, consumer, "COUNT", String(request.count), "STREAMS", request.stream, ">")
        }
        var result: [String: [StreamEntry]] = [:]
        for reply in try await reader.pipeline(commands) {
            if case .error(let message) = reply { throw RedisError(.server, message) }
            result.merge(try StreamsReply(decoding: reply, command: "XREADGROUP").entriesByStream) { $0 + $1 }
        }
        return result
    }

    /// An entry claimed from the group, with what the worker needs to answer it.
    struct Delivery: Sendable {
        /// The request stream it came from.
        var stream: String
        var entry: StreamEntry
        /// How often the group has delivered it, this time included.
        var deliveries: Int
        /// The entry was deleted from the stream while pending and `XAUTOCLAIM` took it out of
        /// the pending list (Redis 7 does): no one owns it any more, so its reply is written
        /// without an ownership check (``ReplyMode/lost``).
        var removedFromGroup: Bool
        /// The user it was taken for by a fair queue (``FairIntake``), whose running mark must
        /// be removed when it ends; nil otherwise (and for requests without a `user`).
        var user: String? = nil
        /// The entry parsed at intake already (to match it with a pool slot of its
        /// conversation's backend), so that handling does not parse it again.
        var parsed: Result<ParsedRequest, RequestRejection>? = nil
    }

    /// Takes over entries idle for at least `minIdle` from any consumer (`XAUTOCLAIM`), with
    /// each entry's delivery count, in one script (``Scripts/claim``): entries taken are never
    /// lost to a later command's failure. Entries deleted from the stream while pending leave the
    /// group here, unanswered: the script marks each (``lostMarker(_:_:)``), and they come back
    /// with nil fields, so they can still be answered.
    func claimIdle(on requests: String, minIdle: Duration, count: Int, cursor: inout String) async throws(RedisError) -> [Delivery] {
        let reply = try await Scripts.claim.run(
            on: writer, keys: [requests],
            arguments: RedisCommand(
                streams.group, consumer, String(minIdle.milliseconds), cursor, String(count), lostMarker(requests, ""),
                String(Self.lostMarkerLifetime.milliseconds)))
        let claimed = try ClaimScriptReply(decoding: reply)
        cursor = claimed.cursor
        var deliveries = claimed.entries.map {
            Delivery(stream: requests, entry: $0.entry, deliveries: $0.deliveries, removedFromGroup: false)
        }
        // An entry dropped from the pending list has no delivery count left: this is its first
        // delivery as a lost entry.
        for id in claimed.deleted {
            deliveries.append(Delivery(stream: requests, entry: StreamEntry(id: id, fields: nil), deliveries: 1, removedFromGroup: true))
        }
        return deliveries
    }

    /// The ID of the last entry delivered to the group on each stream (`XINFO GROUPS`): every
    /// entry after it is new to the group.
    func lastDeliveredIDs(of requests: [String]) async throws(RedisError) -> [String: String] {
        let replies = try await reader.pipeline(requests.map { RedisCommand("XINFO", "GROUPS", $0) })
        var result: [String: String] = [:]
        for (stream, reply) in zip(requests, replies) {
            if case .error(let message) = reply { throw RedisError(.server, message) }
            if let group = try StreamGroupInfo.list(decoding: reply).first(where: { $0.name == streams.group }) {
                result[stream] = group.lastDeliveredID
            }
            // No group yet: the read that follows creates it (NOGROUP).
            if result[stream] == nil { throw RedisError(.server, "NOGROUP no group \(streams.group) on \(stream)") }
        }
        return result
    }

    /// Waits up to `block` until any of the streams has an entry after the given IDs (a plain
    /// `XREAD`, which takes nothing from the group): an idle worker watches every queue it
    /// serves, then takes what the scheduler picks, so work still waits in the streams where any
    /// worker can take it.
    /// - Returns: Whether something arrived.
    func waitForArrivals(after ids: [String: String], block: Duration) async throws(RedisError) -> Bool {
        func wait(_ requests: [String], block: Duration) async throws(RedisError) -> Bool {
            var command = RedisCommand("XREAD", "COUNT", "1", "BLOCK", String(max(1, block.milliseconds)), "STREAMS")
            for stream in requests { command.append(stream) }
            for stream in requests { command.append(ids[stream] ?? "$") }
            return !(try StreamsReply(decoding: try await reader.send(command))).isEmpty
        }
        let requests = ids.keys.sorted()
        let groups = try await reader.groupByNode(requests)
        if groups.count <= 1 { return try await wait(requests, block: block) }
        let short = min(block, Self.clusterReadBlock)
        return await withTaskGroup(of: Bool.self) { group in
            for streams in groups {
                group.addTask { (try? await wait(streams, block: short)) ?? false }
            }
            var any = false
            for await arrived in group { any = any || arrived }
            return any
        }
    }

    /// Resets the idle time of entries this consumer still owns, so that no other consumer
    /// claims them while they are being worked on.
    /// - Returns: The entries that another consumer has claimed meanwhile (entries already
    ///   acknowledged, e.g. by this worker a moment ago, are neither refreshed nor returned).
    func touch(_ ids: [String], on requests: String) async throws(RedisError) -> [String] {
        guard !ids.isEmpty else { return [] }
        let result = try await Scripts.touch.run(
            on: writer, keys: [requests], arguments: RedisCommand([streams.group, consumer] + ids))
        return try result.decodeStrings("touch script")
    }

    /// Removes from the group the consumers that have nothing pending and have been idle for at
    /// least `minIdle`, other than this one (`XGROUP DELCONSUMER`, checked and done in one
    /// script, so a consumer that has just taken an entry is never removed with it).
    /// - Parameter only: Consider only this consumer (a worker removing itself on shutdown).
    /// - Returns: The names removed.
    func deleteIdleConsumers(on requests: String, minIdle: Duration, only: String? = nil) async throws(RedisError) -> [String] {
        let result = try await Scripts.deleteIdleConsumers.run(
            on: writer, keys: [requests],
            arguments: RedisCommand(streams.group, String(minIdle.milliseconds), only == nil ? consumer : "", only ?? ""))
        return try result.decodeStrings("consumer cleanup script")
    }
}
