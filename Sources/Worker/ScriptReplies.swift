import LLMQRedis

/// What the claim script (``Scripts/claim``) answers: `XAUTOCLAIM`'s next cursor, the entries
/// it claimed with their delivery counts, and the IDs of entries it dropped from the pending
/// list because they were deleted from the stream.
struct ClaimScriptReply: Sendable {
    var cursor: String
    var entries: [(entry: StreamEntry, deliveries: Int)]
    var deleted: [String]

    /// `{cursor, {{id, fields, deliveries}...}, {deleted ID...}}`.
    init(decoding reply: RESPValue) throws(RedisError) {
        let command = "claim script"
        let parts = try reply.decodeArray(command, "reply")
        guard parts.count == 3 else { throw .unexpectedReply(command, "reply has \(parts.count) elements, not 3") }
        cursor = try parts[0].decodeString(command, "cursor")
        entries = []
        for (index, item) in try parts[1].decodeArray(command, "claimed entries").enumerated() {
            let row = try item.decodeArray(command, "claimed entry \(index + 1)")
            guard row.count == 3 else {
                throw .unexpectedReply(command, "claimed entry \(index + 1) has \(row.count) elements, not 3")
            }
            let entry = try StreamEntry(decoding: .array([row[0], row[1]]), command: command)
            let deliveries = try row[2].decodeInt(command, "delivery count of \(entry.id)")
            guard deliveries >= 1 else { throw .unexpectedReply(command, "delivery count of \(entry.id) is \(deliveries)") }
            entries.append((entry, deliveries))
        }
        deleted = try parts[2].decodeStrings(command, "deleted IDs")
    }
}

extension RequestStream.ReplyResult {
    /// The reply script's (``Scripts/reply``) answer: 1 written, 0 not ours, 2 gone from the
    /// group, 3 replied already.
    init(decoding reply: RESPValue) throws(RedisError) {
        switch reply {
        case .integer(1): self = .written
        case .integer(0): self = .notOurs
        case .integer(2): self = .goneFromGroup
        case .integer(3): self = .replied
        default: throw .unexpectedReply("reply script", "answer \(reply) is not 0, 1, 2 or 3")
        }
    }
}
