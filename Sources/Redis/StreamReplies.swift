/// Typed readings of Redis stream replies, one decoder per reply (RESP2, as Redis 7 sends it to
/// hiredis). A token of the wrong shape throws ``RedisError/Code/unexpectedReply`` naming the
/// command and the token; nothing is skipped or defaulted.

/// One entry of a stream as Redis returned it.
public struct StreamEntry: Sendable {
    public var id: String
    /// Field names and values in entry order; nil when the entry was deleted while pending.
    public var fields: [(name: [UInt8], value: [UInt8])]?

    public init(id: String, fields: [(name: [UInt8], value: [UInt8])]?) {
        self.id = id
        self.fields = fields
    }

    /// The entry's creation time in Unix milliseconds, from its ID (`<ms>-<seq>`); nil when the
    /// ID's time does not fit an `Int64` (producers may give explicit IDs up to 2^64 - 1).
    public var timestampMilliseconds: Int64? {
        guard let dash = id.firstIndex(of: "-") else { return Int64(id) }
        return Int64(id[..<dash])
    }

    /// The fields as text (invalid UTF-8 replaced), in entry order; none for a deleted entry.
    public var textFields: [(name: String, value: String)] {
        (fields ?? []).map { (String(decoding: $0.name, as: UTF8.self), String(decoding: $0.value, as: UTF8.self)) }
    }
}

extension StreamEntry {
    /// One entry of an `XRANGE`, `XREAD` or `XREADGROUP` reply: `[id, [field, value, ...]]`;
    /// the field list is null for an entry deleted while pending.
    public init(decoding value: RESPValue) throws(RedisError) {
        try self.init(decoding: value, command: "stream entry")
    }

    /// - Parameter command: The command whose reply holds the entry, for the error.
    package init(decoding value: RESPValue, command: String) throws(RedisError) {
        let pair = try value.decodeArray(command, "entry")
        guard pair.count == 2 else { throw .unexpectedReply(command, "entry has \(pair.count) elements, not ID and fields") }
        let id = try pair[0].decodeString(command, "entry ID")
        if pair[1].isNull {
            self.init(id: id, fields: nil)
            return
        }
        let flat = try pair[1].decodeArray(command, "fields of entry \(id)")
        guard flat.count % 2 == 0 else { throw .unexpectedReply(command, "entry \(id) has an unpaired field name") }
        var fields: [(name: [UInt8], value: [UInt8])] = []
        fields.reserveCapacity(flat.count / 2)
        for index in stride(from: 0, to: flat.count, by: 2) {
            fields.append(
                (try flat[index].decodeBytes(command, "field name \(index / 2 + 1) of entry \(id)"),
                    try flat[index + 1].decodeBytes(command, "field value \(index / 2 + 1) of entry \(id)")))
        }
        self.init(id: id, fields: fields)
    }
}

/// An `XREAD` or `XREADGROUP` reply: each stream read, in the order Redis answered, with its
/// entries. A null reply (the block time passed with nothing new) has no streams.
public struct StreamsReply: Sendable {
    public var streams: [(name: String, entries: [StreamEntry])]

    public init(streams: [(name: String, entries: [StreamEntry])]) {
        self.streams = streams
    }

    /// - Parameter command: `XREAD` or `XREADGROUP`, for the error.
    public init(decoding value: RESPValue, command: String = "XREAD") throws(RedisError) {
        if value.isNull {
            self.init(streams: [])
            return
        }
        var streams: [(name: String, entries: [StreamEntry])] = []
        for (index, stream) in try value.decodeArray(command, "reply").enumerated() {
            let pair = try stream.decodeArray(command, "stream \(index + 1)")
            guard pair.count == 2 else {
                throw .unexpectedReply(command, "stream \(index + 1) has \(pair.count) elements, not name and entries")
            }
            let name = try pair[0].decodeString(command, "stream \(index + 1) name")
            var entries: [StreamEntry] = []
            for entry in try pair[1].decodeArray(command, "entries of stream \(name)") {
                entries.append(try StreamEntry(decoding: entry, command: command))
            }
            streams.append((name, entries))
        }
        self.init(streams: streams)
    }

    /// Whether no stream had an entry.
    public var isEmpty: Bool { streams.allSatisfy(\.entries.isEmpty) }

    /// The entries by stream name (a stream named twice has its entries joined, in order).
    public var entriesByStream: [String: [StreamEntry]] {
        var result: [String: [StreamEntry]] = [:]
        for (name, entries) in streams { result[name, default: []] += entries }
        return result
    }

    /// Every entry, stream after stream.
    public var entries: [StreamEntry] { streams.flatMap(\.entries) }
}

/// One row of `XPENDING key group start end count`: ID, consumer, idle time, delivery count.
public struct PendingEntry: Sendable {
    public var id: String
    public var consumer: String
    public var idleMilliseconds: Int
    public var deliveries: Int

    public init(id: String, consumer: String, idleMilliseconds: Int, deliveries: Int) {
        self.id = id
        self.consumer = consumer
        self.idleMilliseconds = idleMilliseconds
        self.deliveries = deliveries
    }

    /// One row: `[id, consumer, idle ms, deliveries]`.
    public init(decoding row: RESPValue) throws(RedisError) {
        let members = try row.decodeArray("XPENDING", "row")
        guard members.count == 4 else { throw .unexpectedReply("XPENDING", "row has \(members.count) elements, not 4") }
        self.init(
            id: try members[0].decodeString("XPENDING", "entry ID"),
            consumer: try members[1].decodeString("XPENDING", "consumer"),
            idleMilliseconds: try members[2].decodeInt("XPENDING", "idle time"),
            deliveries: try members[3].decodeInt("XPENDING", "delivery count"))
    }

    /// The rows of an extended `XPENDING` reply (`XPENDING key group start end count`).
    public static func list(decoding reply: RESPValue) throws(RedisError) -> [PendingEntry] {
        try reply.decodeRows("XPENDING", PendingEntry.init(decoding:))
    }
}

/// One consumer group of a stream, from `XINFO GROUPS`.
public struct StreamGroupInfo: Sendable {
    public var name: String
    public var consumers: Int
    /// Entries delivered and not yet acknowledged.
    public var pending: Int
    public var lastDeliveredID: String
    /// Entries the group has read (Redis 7); nil before Redis 7 or when Redis cannot tell.
    public var entriesRead: Int?
    /// Entries not yet delivered (Redis 7); nil before Redis 7 or when Redis cannot tell.
    public var lag: Int?

    public init(name: String, consumers: Int, pending: Int, lastDeliveredID: String, entriesRead: Int?, lag: Int?) {
        self.name = name
        self.consumers = consumers
        self.pending = pending
        self.lastDeliveredID = lastDeliveredID
        self.entriesRead = entriesRead
        self.lag = lag
    }

    /// One row, a map: `name`, `consumers`, `pending` and `last-delivered-id` are required;
    /// `entries-read` and `lag` may be missing or null; other fields are ignored.
    public init(decoding row: RESPValue) throws(RedisError) {
        let map = try RESPMap(decoding: row, command: "XINFO GROUPS", what: "row")
        self.init(
            name: try map.decodeString("name"), consumers: try map.decodeInt("consumers"),
            pending: try map.decodeInt("pending"), lastDeliveredID: try map.decodeString("last-delivered-id"),
            entriesRead: try map.decodeOptionalInt("entries-read"), lag: try map.decodeOptionalInt("lag"))
    }

    /// The rows of an `XINFO GROUPS` reply, one per group.
    public static func list(decoding reply: RESPValue) throws(RedisError) -> [StreamGroupInfo] {
        try reply.decodeRows("XINFO GROUPS", StreamGroupInfo.init(decoding:))
    }
}

/// One consumer of a group, from `XINFO CONSUMERS`.
public struct StreamConsumerInfo: Sendable {
    public var name: String
    /// Entries delivered to it and not yet acknowledged.
    public var pending: Int
    /// Time since its last read or claim.
    public var idleMilliseconds: Int
    /// Time since its last successful read or claim (Redis 7.2); nil before.
    public var inactiveMilliseconds: Int?

    public init(name: String, pending: Int, idleMilliseconds: Int, inactiveMilliseconds: Int? = nil) {
        self.name = name
        self.pending = pending
        self.idleMilliseconds = idleMilliseconds
        self.inactiveMilliseconds = inactiveMilliseconds
    }

    /// One row, a map: `name`, `pending` and `idle` are required; other fields are ignored.
    public init(decoding row: RESPValue) throws(RedisError) {
        let map = try RESPMap(decoding: row, command: "XINFO CONSUMERS", what: "row")
        self.init(
            name: try map.decodeString("name"), pending: try map.decodeInt("pending"),
            idleMilliseconds: try map.decodeInt("idle"), inactiveMilliseconds: try map.decodeOptionalInt("inactive"))
    }

    /// The rows of an `XINFO CONSUMERS` reply, one per consumer.
    public static func list(decoding reply: RESPValue) throws(RedisError) -> [StreamConsumerInfo] {
        try reply.decodeRows("XINFO CONSUMERS", StreamConsumerInfo.init(decoding:))
    }
}
