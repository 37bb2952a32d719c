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
    private let waitPausedUntil = NIOLockedValueBox<[String: ContinuousClock.Instant]>([:])
    /// One `WAIT` in flight per request stream, shared by the replies written before it.
    private let replicationWaits = ReplicationWaits()

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
            return try Self.entriesByStream(try await reader.send(command))
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
            result.merge(try Self.entriesByStream(reply)) { $0 + $1 }
        }
        return result
    }

    /// An `XREADGROUP` answer: nil when nothing came, else pairs of stream and entries.
    private static func entriesByStream(_ reply: RESPValue) throws(RedisError) -> [String: [StreamEntry]] {
        guard let streamsReply = reply.array else { return [:] }
        var result: [String: [StreamEntry]] = [:]
        for stream in streamsReply {
            guard let pair = stream.array, pair.count == 2, let name = pair[0].string, let items = pair[1].array else { continue }
            var entries: [StreamEntry] = []
            for item in items { entries.append(try StreamEntry(decoding: item)) }
            result[name, default: []] += entries
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
        guard let parts = reply.array, parts.count == 3, let next = parts[0].string, let items = parts[1].array,
            let deleted = parts[2].array
        else {
            throw RedisError(.unexpectedReply, "claim script: \(reply)")
        }
        cursor = next
        var deliveries: [Delivery] = []
        for item in items {
            guard let row = item.array, row.count == 3, let count = row[2].int, count >= 1 else {
                throw RedisError(.unexpectedReply, "claim script entry: \(item)")
            }
            let entry = try StreamEntry(decoding: .array([row[0], row[1]]))
            deliveries.append(Delivery(stream: requests, entry: entry, deliveries: count, removedFromGroup: false))
        }
        for id in deleted {
            guard let id = id.string else { throw RedisError(.unexpectedReply, "claim script deleted ID: \(id)") }
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
            guard let groups = reply.array else { throw RedisError(.unexpectedReply, "XINFO GROUPS \(stream)") }
            for group in groups {
                guard let fields = group.pairs else { throw RedisError(.unexpectedReply, "XINFO GROUPS \(stream) row") }
                var info: [String: String] = [:]
                for (name, value) in fields { if let name = name.string, let value = value.string { info[name] = value } }
                if info["name"] == streams.group {
                    guard let last = info["last-delivered-id"] else {
                        throw RedisError(.unexpectedReply, "XINFO GROUPS \(stream): no last-delivered-id")
                    }
                    result[stream] = last
                }
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
            return !(try await reader.send(command)).isNull
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

    /// What the reply script did.
    enum ReplyResult {
        /// The reply (and any record) is written, the entry acknowledged.
        case written
        /// Another consumer owns the entry now, or it was acknowledged, or (lost mode) it was
        /// answered already.
        case notOurs
        /// The entry is neither pending nor in the stream, and no reply to it was written: it
        /// was deleted and an `XAUTOCLAIM` took it out of the group.
        case goneFromGroup
        /// A reply to the entry exists already (its marker says so): written by this worker's
        /// own earlier attempt, whose answer was lost with its connection, or by the consumer
        /// that took the entry over.
        case replied
    }

    /// How the reply script may write a reply.
    enum ReplyMode: String {
        /// Only while this consumer owns the entry in the group's pending list; acknowledges it.
        case owned
        /// For an entry that `XAUTOCLAIM` removed from the pending list because it was deleted:
        /// no owner to check; the reply marker lets only the first answer through.
        case lost
    }

    /// The `done` entry of a streamed answer, written with its reply.
    struct LastChunk {
        var stream: String
        var fields: [(String, String)]
        /// The chunk stream's expiry, renewed.
        var expire: Duration
        /// `MAXLEN ~` of the chunk stream; 0 none.
        var maxLength: Int
    }

    /// Publishes the reply (and a dead-letter record, and a streamed answer's last chunk) and acknowledges the request in one
    /// atomic step, only if this consumer still owns the entry; then deletes the request entry
    /// (with `streams.keepAnswered`, after copying it to the history stream).
    /// - Parameter deadLetter: Field names and values of the dead-letter record, if any.
    /// - Returns: What happened; nothing was written unless ``ReplyResult/written``.
    /// - Parameters:
    ///   - status: `ok` or `error`, counted in the stats hash with `errorCode`.
    func reply(
        to entryID: String, on requests: String, stream replyStream: String, fields: [(String, String)],
        status: String, errorCode: String, backend: String = "",
        deadLetter: RedisCommand? = nil, lastChunk: LastChunk? = nil, mode: ReplyMode = .owned
    ) async throws(RedisError) -> ReplyResult {
        var chunk = RedisCommand()
        for (name, value) in lastChunk?.fields ?? [] {
            chunk.append(name)
            chunk.append(value)
        }
        var arguments = RedisCommand(
            streams.group, entryID, consumer, mode.rawValue, String(streams.replyMaxLength),
            String(streams.deadMaxLength), streams.keepAnswered ? "keep" : "delete",
            String(streams.answeredMaxLength), answeredMinimumID(), status, errorCode, backend,
            String(deadLetter?.argumentCount ?? 0), String(chunk.argumentCount),
            String(lastChunk?.expire.milliseconds ?? 0), String(lastChunk?.maxLength ?? 0),
            String(Self.lostMarkerLifetime.milliseconds))
        if let deadLetter { arguments.append(contentsOf: deadLetter) }
        arguments.append(contentsOf: chunk)
        for (name, value) in fields {
            arguments.append(name)
            arguments.append(value)
        }
        // The queue's own keys (in cluster mode, in its slot); the default reply stream too.
        let own = streams.serving(requests)
        let replyStream = replyStream == streams.replies ? own.replies : replyStream
        var keys = [requests, replyStream, own.dead, own.answered, lostMarker(requests, entryID), own.stats, own.replies]
        if let lastChunk { keys.append(lastChunk.stream) }
        let result = try await Scripts.reply.run(on: writer, keys: keys, arguments: arguments)
        switch result.int {
        case 1:
            await waitForReplicas(of: requests)
            return .written
        case 2: return .goneFromGroup
        case 3: return .replied
        case 0: return .notOurs
        default: throw RedisError(.unexpectedReply, "reply script: \(result)")
        }
    }

    /// The marker of an entry that left the group without a reply: set to `lost` by the claim
    /// script when `XAUTOCLAIM` drops an entry deleted from the stream while pending, and to
    /// `replied` by the reply that answers it. An entry that is neither pending nor marked has
    /// been acknowledged, and only a reply acknowledges: that is the proof a retried reply reads
    /// (``ReplyResult/replied``), at no cost to the entries that never leave the group otherwise.
    func lostMarker(_ requests: String, _ entryID: String) -> String {
        requests + ":lost:" + entryID
    }

    /// How long a lost-entry marker lives.
    static let lostMarkerLifetime: Duration = .seconds(86400)

    /// With `redis.waitReplicas`, waits until that many replicas have the writes made so far on
    /// the connection to the master of `requests` (`WAIT`). The reply stands either way: a
    /// replica that is late or missing is counted (`llmq_reply_replication_short_total`), not
    /// waited for again.
    ///
    /// `WAIT` holds the connection it is sent on, and every reply's commands share it, so one
    /// `WAIT` at a time serves all the replies written before it (``ReplicationWaits``). While a
    /// master has too few replicas (one died, or was promoted in a failover), each `WAIT` would
    /// still hold it for the whole timeout: after a short answer the queue's replies do not wait
    /// for ``shortWaitPause``; then one tries again.
    private func waitForReplicas(of requests: String) async {
        guard waitReplicas > 0 else { return }
        let short = Counter(label: "llmq_reply_replication_short_total")
        if let until = waitPausedUntil.withLockedValue({ $0[requests] }), ContinuousClock.now < until {
            short.increment()
            return
        }
        let enough = await replicationWaits.afterReply(on: requests) {
            let acknowledged = try? await writer.send(
                RedisCommand("WAIT", String(waitReplicas), String(max(1, waitTimeout.milliseconds))), onNodeOf: requests)
            return (acknowledged?.int ?? 0) >= waitReplicas
        }
        if !enough {
            short.increment()
            waitPausedUntil.withLockedValue { $0[requests] = ContinuousClock.now + Self.shortWaitPause }
        }
    }

    /// How long replies skip `WAIT` after one found too few replicas.
    static let shortWaitPause: Duration = .seconds(5)

    /// With `keepAnswered` and a maximum age: the oldest history ID to keep (`XTRIM MINID`).
    private func answeredMinimumID() -> String {
        guard streams.keepAnswered, streams.answeredMaxAgeSeconds > 0 else { return "" }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return String(max(0, now - Int64(streams.answeredMaxAgeSeconds) * 1000)) + "-0"
    }

    /// Resets the idle time of entries this consumer still owns, so that no other consumer
    /// claims them while they are being worked on.
    /// - Returns: The entries that another consumer has claimed meanwhile (entries already
    ///   acknowledged, e.g. by this worker a moment ago, are neither refreshed nor returned).
    func touch(_ ids: [String], on requests: String) async throws(RedisError) -> [String] {
        guard !ids.isEmpty else { return [] }
        let result = try await Scripts.touch.run(
            on: writer, keys: [requests], arguments: RedisCommand([streams.group, consumer] + ids))
        return result.array?.compactMap(\.string) ?? []
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
        return result.array?.compactMap(\.string) ?? []
    }

}

/// A Lua script run with `EVALSHA`. Its SHA-1 comes from `SCRIPT LOAD` on first use; when the
/// server has lost it (a restart, `SCRIPT FLUSH`), `EVAL` runs it and caches it again.
final class Script: Sendable {
    let source: String
    private let sha1 = NIOLockedValueBox<String?>(nil)

    init(source: String) {
        self.source = source
    }

    func run(on client: RedisClient, keys: [String], arguments: RedisCommand) async throws(RedisError) -> RESPValue {
        if sha1.withLockedValue({ $0 }) == nil { try await load(on: client) }
        do {
            return try await client.send(command(keys: keys, arguments: arguments))
        } catch where error.isServerError("NOSCRIPT") {
            return try await client.send(evalCommand(keys: keys, arguments: arguments))
        }
    }

    /// The command that runs the script, for callers that pipeline it themselves: `EVALSHA`
    /// once the SHA-1 is known (after a ``run(on:keys:arguments:)`` or ``load(on:)``), else
    /// `EVAL`. A caller that gets `NOSCRIPT` back sends ``evalCommand(keys:arguments:)``.
    func command(keys: [String], arguments: RedisCommand) -> RedisCommand {
        if let sha1 = sha1.withLockedValue({ $0 }) { return command("EVALSHA", sha1, keys, arguments) }
        return evalCommand(keys: keys, arguments: arguments)
    }

    func evalCommand(keys: [String], arguments: RedisCommand) -> RedisCommand {
        command("EVAL", source, keys, arguments)
    }

    /// Loads the script (`SCRIPT LOAD`), so that ``command(keys:arguments:)`` can use `EVALSHA`.
    func load(on client: RedisClient) async throws(RedisError) {
        guard let sha1 = try await client.send("SCRIPT", "LOAD", source).string else {
            throw RedisError(.unexpectedReply, "SCRIPT LOAD")
        }
        self.sha1.withLockedValue { $0 = sha1 }
    }

    private func command(_ name: String, _ script: String, _ keys: [String], _ arguments: RedisCommand) -> RedisCommand {
        var command = RedisCommand(name, script, String(keys.count))
        for key in keys { command.append(key) }
        command.append(contentsOf: arguments)
        return command
    }
}

enum Scripts {
    /// KEYS: request stream, reply stream (`reply_to` or the default), dead-letter stream,
    /// history stream, lost-entry marker (`<requests>:lost:<id>`, see
    /// ``RequestStream/lostMarker(_:_:)``), stats hash, the default reply stream, and for a
    /// streamed answer its chunk stream.
    /// Returns 1 when written, 0 when the entry is not ours (pending on another consumer), 2
    /// when it is neither pending nor in the stream and unanswered, 3 when a reply exists
    /// already (``RequestStream/ReplyResult``).
    /// ARGV: group, entry ID, consumer, mode (`owned`/`lost`), reply max length, dead-letter
    /// max length, `delete`/`keep` (the answered request entry), history max length, history
    /// minimum ID (or ""), status, error code (or ""), backend (or ""), dead-letter argument
    /// count, last chunk argument count, chunk stream expiry ms, chunk stream max length,
    /// lost marker lifetime ms, dead-letter fields..., last chunk fields..., reply fields...
    ///
    /// An entry that is not pending was acknowledged by its reply, unless the lost marker says
    /// it left the group unanswered: so an attempt whose answer was lost with its connection,
    /// retried, finds proof that it wrote (3) rather than an entry to answer as lost (2).
    ///
    /// The stats hash counts `replies:<status>`, `error:<code>` and `backend:<name>:<status>`
    /// with each reply written; a
    /// stats key of another type, or a field that is not a counter, is left alone (the counts
    /// are a convenience, the reply is not).
    ///
    /// Checks everything before the first write, writes, and acknowledges last: a script is not
    /// rolled back when a command fails, so no command that can fail may come after a write,
    /// and an entry must never be acknowledged without its reply. (Redis refuses a script's
    /// first write when out of memory, never a later one, so `OOM` cannot split it either.)
    /// A `reply_to`, chunk, dead-letter or history key that is not a stream costs only what it
    /// was for, and the reply says so: the reply goes to the default reply stream, the last
    /// chunk or the record is not written.
    static let reply = Script(
        source: """
            local group, id, consumer, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
            local replyMax, deadMax = tonumber(ARGV[5]), tonumber(ARGV[6])
            local keep, historyMax, historyMinID = ARGV[7] == 'keep', tonumber(ARGV[8]), ARGV[9]
            local status, errorCode, backend = ARGV[10], ARGV[11], ARGV[12]
            local deadCount, chunkCount = tonumber(ARGV[13]), tonumber(ARGV[14])
            local chunkExpire, chunkMax, markerLifetime = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])
            local first = 18
            -- Where the last chunk's fields start, fixed before deadCount can be cleared below.
            local chunkFirst = first + deadCount
            local function notStream(key)
              local kind = redis.call('TYPE', key)['ok']
              if kind == 'stream' or kind == 'none' then return nil end
              return kind
            end
            local function add(key, maxLength, fields)
              if maxLength > 0 then
                redis.call('XADD', key, 'MAXLEN', '~', maxLength, '*', unpack(fields))
              else
                redis.call('XADD', key, '*', unpack(fields))
              end
            end
            local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
            if #pending > 0 then
              -- Pending on another consumer: it took the entry over and answers it.
              if mode == 'lost' or pending[1][2] ~= consumer then return 0 end
            else
              -- Not pending: acknowledged by its reply, unless marked as lost unanswered.
              local marker = redis.call('GET', KEYS[5])
              if marker ~= 'lost' then return 3 end
              if mode ~= 'lost' then return 2 end
            end
            local reply = {}
            for i = first + deadCount + chunkCount, #ARGV do reply[#reply + 1] = ARGV[i] end
            local replyKey = KEYS[2]
            local kind = notStream(replyKey)
            if kind and replyKey ~= KEYS[7] then
              reply[#reply + 1] = 'reply_error'
              reply[#reply + 1] = 'could not write to reply_to ' .. replyKey .. ': it holds a ' .. kind .. ', not a stream; replied on ' .. KEYS[7]
              replyKey = KEYS[7]
              kind = notStream(replyKey)
            end
            if kind then
              return redis.error_reply('WRONGTYPE key ' .. replyKey .. ' holds a ' .. kind .. ', not a stream: no reply can be written')
            end
            if chunkCount > 0 then
              kind = notStream(KEYS[8])
              if kind then
                chunkCount = 0
                reply[#reply + 1] = 'stream_error'
                reply[#reply + 1] = 'the chunk stream ' .. KEYS[8] .. ' holds a ' .. kind .. ', not a stream; its last chunk was not written'
              end
            end
            if deadCount > 0 then
              kind = notStream(KEYS[3])
              if kind then
                deadCount = 0
                reply[#reply + 1] = 'dead_letter_error'
                reply[#reply + 1] = 'the dead-letter stream ' .. KEYS[3] .. ' holds a ' .. kind .. ', not a stream; the record was not kept'
              end
            end
            local history = nil
            if keep and mode == 'owned' then
              kind = notStream(KEYS[4])
              if kind then
                reply[#reply + 1] = 'history_error'
                reply[#reply + 1] = 'the history stream ' .. KEYS[4] .. ' holds a ' .. kind .. ', not a stream; the request was not kept'
              else
                local entry = redis.call('XRANGE', KEYS[1], id, id)
                -- unpack() takes at most about 8000 values: a larger copy would fail after the reply.
                if #entry == 1 and #entry[1][2] > 7000 then
                  reply[#reply + 1] = 'history_error'
                  reply[#reply + 1] = 'the request has too many fields to keep in ' .. KEYS[4]
                elseif #entry == 1 then
                  history = {'request', id}
                  for _, value in ipairs(entry[1][2]) do history[#history + 1] = value end
                end
              end
            end
            local counters = {'replies:' .. status}
            if errorCode ~= '' then counters[#counters + 1] = 'error:' .. errorCode end
            if backend ~= '' then counters[#counters + 1] = 'backend:' .. backend .. ':' .. status end
            local statsKind = redis.call('TYPE', KEYS[6])['ok']
            if statsKind == 'hash' then
              for _, field in ipairs(counters) do
                local count = redis.call('HGET', KEYS[6], field)
                if count and not (string.match(count, '^%d+$') and #count < 18) then counters = {} end
              end
            elseif statsKind ~= 'none' then
              counters = {}
            end
            add(replyKey, replyMax, reply)
            for _, field in ipairs(counters) do redis.call('HINCRBY', KEYS[6], field, 1) end
            if deadCount > 0 then
              local record = {}
              for i = first, first - 1 + deadCount do record[#record + 1] = ARGV[i] end
              add(KEYS[3], deadMax, record)
            end
            if chunkCount > 0 then
              local chunk = {}
              for i = chunkFirst, chunkFirst + chunkCount - 1 do chunk[#chunk + 1] = ARGV[i] end
              add(KEYS[8], chunkMax, chunk)
              redis.call('PEXPIRE', KEYS[8], chunkExpire)
            end
            if mode == 'lost' then
              -- Left the group unanswered, answered now: no second answer.
              redis.call('SET', KEYS[5], 'replied', 'PX', markerLifetime)
              return 1
            end
            redis.call('XACK', KEYS[1], group, id)
            if history then
              add(KEYS[4], historyMax, history)
              if historyMinID ~= '' then redis.call('XTRIM', KEYS[4], 'MINID', '~', historyMinID) end
            end
            redis.call('XDEL', KEYS[1], id)
            return 1
            """)

    /// KEYS: request stream, chunk stream, lost-entry marker. ARGV: group, entry ID, consumer,
    /// chunk stream max length (0 none), expiry ms to set (0 leaves it), then for each chunk its
    /// field count and fields.
    ///
    /// The fence of a streamed answer: chunks are written only while this consumer owns the
    /// entry (it is pending on this consumer), or, for an entry deleted and taken out of the
    /// group, while it is unanswered (its marker says `lost`). Returns the number of chunks written, or -1 when the
    /// writer is fenced off: another consumer took the entry over (and writes its own reset
    /// next) or the entry was answered. So a stalled worker's late chunks can never land after
    /// its heir's reset. A chunk key of the wrong type fails at the first `XADD`, before any write.
    static let chunks = Script(
        source: """
            local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
            if #pending > 0 then
              if pending[1][2] ~= ARGV[3] then return -1 end
            elseif redis.call('GET', KEYS[3]) ~= 'lost' then
              return -1
            end
            local maxLength, expire = tonumber(ARGV[4]), tonumber(ARGV[5])
            local i, written = 6, 0
            while i <= #ARGV do
              local count = tonumber(ARGV[i])
              local fields = {}
              for j = i + 1, i + count do fields[#fields + 1] = ARGV[j] end
              if maxLength > 0 then
                redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxLength, '*', unpack(fields))
              else
                redis.call('XADD', KEYS[2], '*', unpack(fields))
              end
              written = written + 1
              i = i + count + 1
            end
            if expire > 0 then redis.call('PEXPIRE', KEYS[2], expire) end
            return written
            """)

    /// KEYS: request stream. ARGV: group, consumer, minimum idle ms, cursor, count, lost-marker
    /// prefix, lost-marker lifetime ms.
    /// `XAUTOCLAIM`, and each claimed entry's delivery count from the pending list, in one
    /// atomic step: `{next cursor, {{id, fields, deliveries}...}, {deleted IDs...}}`. Each
    /// deleted entry `XAUTOCLAIM` dropped from the pending list left the group unanswered: it is
    /// marked `lost` (the marker shares the request stream's hash tag, so its slot).
    static let claim = Script(
        source: """
            local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
            local entries = {}
            for _, entry in ipairs(claimed[2]) do
              if entry then
                local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
                entries[#entries + 1] = {entry[1], entry[2], pending[1][4]}
              end
            end
            local deleted = claimed[3] or {}
            for _, id in ipairs(deleted) do
              redis.call('SET', ARGV[6] .. id, 'lost', 'PX', ARGV[7], 'NX')
            end
            return {claimed[1], entries, deleted}
            """)

    /// KEYS: request stream. ARGV: group, consumer, entry IDs...
    /// Refreshes the entries still pending on this consumer; returns those pending on another.
    /// An entry deleted from the stream is left alone: Redis 7's `XCLAIM` would drop it from
    /// the pending list, and the reply for it would then find it no longer ours.
    static let touch = Script(
        source: """
            local lost = {}
            for i = 3, #ARGV do
              local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
              if #pending > 0 then
                if pending[1][2] ~= ARGV[2] then
                  lost[#lost + 1] = ARGV[i]
                elseif #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) > 0 then
                  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
                end
              end
            end
            return lost
            """)
}

extension Scripts {
    /// KEYS: request stream. ARGV: group, minimum idle ms, a name to keep ("" none), the only
    /// name to consider ("" all). Returns the names removed. A missing stream or group removes
    /// nothing. `XINFO CONSUMERS` rows are flat name/value arrays (RESP2, as scripts see them).
    static let deleteIdleConsumers = Script(
        source: """
            if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
            local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
            if not ok then return {} end
            local minIdle, keep, only = tonumber(ARGV[2]), ARGV[3], ARGV[4]
            local removed = {}
            for _, row in ipairs(consumers) do
              local info = {}
              for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
              local name = info['name']
              if name ~= keep and (only == '' or name == only) and info['pending'] == 0 and info['idle'] >= minIdle then
                redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
                removed[#removed + 1] = name
              end
            end
            return removed
            """)
}
