/// Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the key, or of its hash tag, mod 16384.
///
/// A hash tag is what lies between the first `{` and the first `}` after it, when that is not
/// empty: `{llmq}:requests` and `{llmq}:replies` hash only `llmq`, so they share a slot (and a
/// master), which is what lets one Lua script touch both.
public enum HashSlot {
    /// The number of slots of a Redis Cluster.
    public static let count = 16384

    /// The slot of `key`, 0..<16384.
    public static func of(_ key: String) -> Int {
        of(bytes: Array(key.utf8))
    }

    /// The slot of a binary key.
    public static func of<Bytes: Collection<UInt8>>(bytes key: Bytes) -> Int {
        let tagged = hashTag(of: key) ?? key[...]
        return Int(crc16(tagged) & 0x3FFF)
    }

    /// The part of `key` that is hashed, when it has a hash tag (`{llmq}:requests` → `llmq`).
    public static func tag(of key: String) -> String? {
        hashTag(of: Array(key.utf8)).map { String(decoding: $0, as: UTF8.self) }
    }

    private static func hashTag<Bytes: Collection<UInt8>>(of key: Bytes) -> Bytes.SubSequence? {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return nil }
        let start = key.index(after: open)
        guard let close = key[start...].firstIndex(of: UInt8(ascii: "}")), close != start else { return nil }
        return key[start..<close]
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as the cluster specification.
    private static func crc16<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }
}
