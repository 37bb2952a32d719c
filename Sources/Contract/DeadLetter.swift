import LLMQRedis

/// The record an entry leaves in the dead-letter stream: why, how often it was delivered, and
/// its fields as `field:NAME`, byte for byte.
///
/// The copy is bounded, because the entry is whatever a producer wrote (up to Redis's 512 MiB
/// per value, thousands of fields) and the record travels through one script call: at most
/// ``maxFields`` fields and ``maxBytes`` bytes of names and values are kept, and a
/// `truncated` field says what was left out.
package enum DeadLetter {
    package static let maxFields = 128
    package static let maxBytes = 256 << 10

    /// - Returns: The record's field names and values, as script arguments.
    package static func record(of entry: StreamEntry, reason: String, deliveries: Int, queue: String? = nil) -> RedisCommand {
        var record = RedisCommand("request", entry.id, "reason", reason, "deliveries", String(deliveries))
        if let queue {
            record.append("queue")
            record.append(queue)
        }
        var kept = 0
        var bytes = 0
        var omittedFields = 0
        var omittedBytes = 0
        let fieldPrefix = Array("field:".utf8)
        for (name, value) in entry.fields ?? [] {
            let size = name.count + value.count
            guard kept < maxFields, bytes + size <= maxBytes else {
                omittedFields += 1
                omittedBytes += size
                continue
            }
            record.append(bytes: fieldPrefix + name)
            record.append(bytes: value)
            kept += 1
            bytes += size
        }
        if omittedFields > 0 {
            record.append("truncated")
            record.append("\(omittedFields) fields (\(omittedBytes) bytes) not copied: a record keeps at most \(maxFields) fields and \(maxBytes) bytes")
        }
        return record
    }
}
