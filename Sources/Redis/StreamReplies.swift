/// Typed readings of Redis stream replies.

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
}

extension StreamEntry {
    /// One entry of an `XRANGE`, `XREAD` or `XREADGROUP` reply: `[id, [field, value, ...]]`;
    /// the field list is nil for an entry deleted while pending.
    public init(decoding value: RESPValue) throws(RedisError) {
        guard let pair = value.array, pair.count == 2, let id = pair[0].string else {
            throw RedisError(.unexpectedReply, "stream entry")
        }
        let fields = pair[1].pairs?.map { (name: $0.name.bytes ?? [], value: $0.value.bytes ?? []) }
        self.init(id: id, fields: fields)
    }
}

/// One row of `XPENDING key group start end count`: ID, consumer, idle time, delivery count.
public struct PendingEntry: Sendable {
    public var id: String
    public var consumer: String
    public var idleMilliseconds: Int
    public var deliveries: Int

    /// Nil unless the row has the four members Redis documents, with their types.
    public init?(_ row: RESPValue) {
        guard let members = row.array, members.count >= 4, let id = members[0].string,
            let consumer = members[1].string, let idle = members[2].int, let deliveries = members[3].int
        else { return nil }
        self.id = id
        self.consumer = consumer
        self.idleMilliseconds = idle
        self.deliveries = deliveries
    }
}
