import LLMQRedis
import Synchronization

/// The Redis side of a worker: reading from the group, replying, claiming, refreshing.
///
/// Two connections: a blocking `XREADGROUP` holds its connection until entries arrive, so it
/// gets one of its own; replies, acknowledgements and claims share the other, where concurrent
/// requests' commands are pipelined together.
final class RequestStream: Sendable {
    let streams: WorkerConfiguration.Streams
    let consumer: String
    let reader: RedisClient
    let writer: RedisClient

    init(redis: RedisConfiguration, streams: WorkerConfiguration.Streams, consumer: String, readBlock: Duration) {
        self.streams = streams
        self.consumer = consumer
        var readerConfiguration = redis
        readerConfiguration.commandTimeout = readBlock + redis.commandTimeout
        self.reader = RedisClient(configuration: readerConfiguration, name: "llmq-read:\(consumer)")
        self.writer = RedisClient(configuration: redis, name: "llmq-write:\(consumer)")
    }

    func shutdown() {
        reader.shutdown()
        writer.shutdown()
    }

    /// Creates the group (and the stream) if missing. A new group starts at `0`, so requests
    /// published before any worker existed are served too.
    func ensureGroup() async throws(RedisError) {
        do {
            _ = try await writer.send("XGROUP", "CREATE", streams.requests, streams.group, "0", "MKSTREAM")
        } catch where error.isServerError("BUSYGROUP") {
            // Another worker created it first.
        }
    }

    /// New entries for this consumer, waiting up to `block` for some to arrive.
    func readNew(count: Int, block: Duration) async throws(RedisError) -> [StreamEntry] {
        let reply = try await reader.send(
            RedisCommand(
                "XREADGROUP", "GROUP", streams.group, consumer, "COUNT", String(count),
                "BLOCK", String(block.milliseconds), "STREAMS", streams.requests, ">"))
        guard let streamsReply = reply.array else { return [] }  // nil: the block timed out
        var entries: [StreamEntry] = []
        for stream in streamsReply {
            guard let pair = stream.array, pair.count == 2, let items = pair[1].array else { continue }
            for item in items { entries.append(try Self.entry(from: item)) }
        }
        return entries
    }

    /// Takes over entries idle for at least `minIdle` from any consumer (`XAUTOCLAIM`), with
    /// each entry's delivery count. Entries deleted from the stream while pending come back
    /// with nil fields, so they can still be answered.
    func claimIdle(minIdle: Duration, count: Int, cursor: inout String) async throws(RedisError) -> [(entry: StreamEntry, deliveries: Int)] {
        let reply = try await writer.send(
            RedisCommand(
                "XAUTOCLAIM", streams.requests, streams.group, consumer, String(minIdle.milliseconds), cursor,
                "COUNT", String(count)))
        guard let parts = reply.array, parts.count >= 2, let next = parts[0].string, let items = parts[1].array else {
            throw RedisError(.unexpectedReply, "XAUTOCLAIM")
        }
        cursor = next
        var entries: [StreamEntry] = []
        for item in items where !item.isNull { entries.append(try Self.entry(from: item)) }
        if parts.count >= 3, let deleted = parts[2].array {
            for id in deleted { if let id = id.string { entries.append(StreamEntry(id: id, fields: nil)) } }
        }
        guard !entries.isEmpty else { return [] }
        // XAUTOCLAIM does not say how often an entry was delivered; the PEL does.
        let counts = try await writer.pipeline(entries.map { entry in
            RedisCommand("XPENDING", streams.requests, streams.group, entry.id, entry.id, "1")
        })
        return zip(entries, counts).map { entry, count in
            let deliveries = count.array?.first?.array?[3].int ?? 1
            return (entry, deliveries)
        }
    }

    /// Publishes the reply (and a dead-letter record) and acknowledges the request in one
    /// atomic step, only if this consumer still owns the entry.
    /// - Returns: false if the entry was no longer ours (claimed by another consumer, or
    ///   already acknowledged): nothing was written.
    func reply(
        to entryID: String, stream replyStream: String, fields: [(String, String)],
        deadLetter: [(String, String)]? = nil
    ) async throws(RedisError) -> Bool {
        var arguments = [
            streams.group, entryID, consumer, String(streams.replyMaxLength), String((deadLetter?.count ?? 0) * 2),
        ]
        for (name, value) in deadLetter ?? [] {
            arguments.append(name)
            arguments.append(value)
        }
        for (name, value) in fields {
            arguments.append(name)
            arguments.append(value)
        }
        let result = try await Scripts.reply.run(on: writer, keys: [streams.requests, replyStream, streams.dead], arguments: arguments)
        return result.int == 1
    }

    /// Resets the idle time of entries this consumer still owns, so that no other consumer
    /// claims them while they are being worked on.
    /// - Returns: The entries that another consumer has claimed meanwhile (entries already
    ///   acknowledged, e.g. by this worker a moment ago, are neither refreshed nor returned).
    func touch(_ ids: [String]) async throws(RedisError) -> [String] {
        guard !ids.isEmpty else { return [] }
        let result = try await Scripts.touch.run(
            on: writer, keys: [streams.requests], arguments: [streams.group, consumer] + ids)
        return result.array?.compactMap(\.string) ?? []
    }

    static func entry(from value: RESPValue) throws(RedisError) -> StreamEntry {
        guard let pair = value.array, pair.count == 2, let id = pair[0].string else {
            throw RedisError(.unexpectedReply, "stream entry")
        }
        let fields = pair[1].pairs?.map { (name: $0.name.bytes ?? [], value: $0.value.bytes ?? []) }
        return StreamEntry(id: id, fields: fields)
    }
}

/// A Lua script run with `EVALSHA`. Its SHA-1 comes from `SCRIPT LOAD` on first use; when the
/// server has lost it (a restart, `SCRIPT FLUSH`), `EVAL` runs it and caches it again.
final class Script: Sendable {
    let source: String
    private let sha1 = Mutex<String?>(nil)

    init(source: String) {
        self.source = source
    }

    func run(on client: RedisClient, keys: [String], arguments: [String]) async throws(RedisError) -> RESPValue {
        var sha1 = self.sha1.withLock { $0 }
        if sha1 == nil {
            sha1 = try await client.send("SCRIPT", "LOAD", source).string
            self.sha1.withLock { $0 = sha1 }
        }
        do {
            return try await client.send(command("EVALSHA", sha1 ?? "", keys, arguments))
        } catch where error.isServerError("NOSCRIPT") {
            return try await client.send(command("EVAL", source, keys, arguments))
        }
    }

    private func command(_ name: String, _ script: String, _ keys: [String], _ arguments: [String]) -> RedisCommand {
        var command = RedisCommand(name, script, String(keys.count))
        for key in keys { command.append(key) }
        for argument in arguments { command.append(argument) }
        return command
    }
}

enum Scripts {
    /// KEYS: request stream, reply stream, dead-letter stream.
    /// ARGV: group, entry ID, consumer, reply max length, dead-letter argument count,
    /// dead-letter fields..., reply fields...
    ///
    /// Writes first and acknowledges last: a script is not rolled back when a command fails,
    /// and an entry must never be acknowledged without its reply.
    static let reply = Script(
        source: """
            local owner = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
            if #owner == 0 or owner[1][2] ~= ARGV[3] then return 0 end
            local replyType = redis.call('TYPE', KEYS[2])['ok']
            if replyType ~= 'stream' and replyType ~= 'none' then
              return redis.error_reply('WRONGTYPE reply key ' .. KEYS[2] .. ' holds a ' .. replyType .. ', not a stream')
            end
            local deadCount = tonumber(ARGV[5])
            local replyStart = 6 + deadCount
            local maxLength = tonumber(ARGV[4])
            if maxLength > 0 then
              redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxLength, '*', unpack(ARGV, replyStart))
            else
              redis.call('XADD', KEYS[2], '*', unpack(ARGV, replyStart))
            end
            if deadCount > 0 then
              redis.call('XADD', KEYS[3], '*', unpack(ARGV, 6, 5 + deadCount))
            end
            redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
            return 1
            """)

    /// KEYS: request stream. ARGV: group, consumer, entry IDs...
    /// Refreshes the entries still pending on this consumer; returns those pending on another.
    static let touch = Script(
        source: """
            local lost = {}
            for i = 3, #ARGV do
              local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
              if #pending > 0 then
                if pending[1][2] == ARGV[2] then
                  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
                else
                  lost[#lost + 1] = ARGV[i]
                end
              end
            end
            return lost
            """)
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Milliseconds as a fraction, for reply timings.
    var fractionalMilliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}
