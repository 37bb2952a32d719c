/// What the typed reply decoders share: reading one token of a reply, or throwing an
/// ``RedisError/Code/unexpectedReply`` error that names the command and the token that was wrong
/// (valkey-swift's `decode` way). No decoder turns a malformed token into a default.

extension RedisError {
    /// A reply to `command` that does not have the shape Redis documents: `what` says which token.
    package static func unexpectedReply(_ command: String, _ what: String) -> RedisError {
        RedisError(.unexpectedReply, "\(command): \(what)")
    }
}

extension RESPValue {
    /// The elements of an array reply.
    /// - Parameter what: The token, for the error ("reply", "entry 2", ...).
    package func decodeArray(_ command: String, _ what: String) throws(RedisError) -> [RESPValue] {
        guard case .array(let elements) = self else { throw .unexpectedReply(command, "\(what) is not an array") }
        return elements
    }

    /// The text of a simple or bulk string.
    package func decodeString(_ command: String, _ what: String) throws(RedisError) -> String {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
        default: throw .unexpectedReply(command, "\(what) is not a string")
        }
    }

    /// The bytes of a simple or bulk string.
    package func decodeBytes(_ command: String, _ what: String) throws(RedisError) -> [UInt8] {
        guard let bytes else { throw .unexpectedReply(command, "\(what) is not a string") }
        return bytes
    }

    /// An integer reply, or a string holding a decimal number (Redis sends some numbers as strings).
    package func decodeInt(_ command: String, _ what: String) throws(RedisError) -> Int {
        guard let value = int else { throw .unexpectedReply(command, "\(what) is not an integer") }
        return value
    }

    /// The rows of an array reply, each read by `decode`.
    package func decodeRows<Row>(
        _ command: String, _ decode: (RESPValue) throws(RedisError) -> Row
    ) throws(RedisError) -> [Row] {
        var rows: [Row] = []
        for row in try decodeArray(command, "reply") { rows.append(try decode(row)) }
        return rows
    }

    /// An array of strings (IDs, names), as llmq's scripts return them.
    package func decodeStrings(_ command: String, _ what: String = "reply") throws(RedisError) -> [String] {
        var strings: [String] = []
        for (index, element) in try decodeArray(command, what).enumerated() {
            strings.append(try element.decodeString(command, "\(what) element \(index + 1)"))
        }
        return strings
    }
}

/// A RESP2 map: a flat array of alternating names and values (`XINFO` rows), read by name.
///
/// Names not asked for are ignored, since new Redis versions add fields; a name asked for must
/// be there (``decodeInt(_:)``, ``decodeString(_:)``) unless the caller reads it as optional.
package struct RESPMap {
    let command: String
    private let values: [String: RESPValue]

    package init(decoding value: RESPValue, command: String, what: String = "reply") throws(RedisError) {
        let flat = try value.decodeArray(command, what)
        guard flat.count % 2 == 0 else { throw .unexpectedReply(command, "\(what) has an unpaired field name") }
        var values: [String: RESPValue] = [:]
        for index in stride(from: 0, to: flat.count, by: 2) {
            values[try flat[index].decodeString(command, "field name \(index / 2 + 1)")] = flat[index + 1]
        }
        self.command = command
        self.values = values
    }

    package func decodeValue(_ name: String) throws(RedisError) -> RESPValue {
        guard let value = values[name] else { throw .unexpectedReply(command, "no field '\(name)'") }
        return value
    }

    package func decodeString(_ name: String) throws(RedisError) -> String {
        try decodeValue(name).decodeString(command, "field '\(name)'")
    }

    package func decodeInt(_ name: String) throws(RedisError) -> Int {
        try decodeValue(name).decodeInt(command, "field '\(name)'")
    }

    /// Nil when the field is missing (an older Redis) or null (Redis cannot tell, as `lag` may be).
    package func decodeOptionalInt(_ name: String) throws(RedisError) -> Int? {
        guard let value = values[name], !value.isNull else { return nil }
        return try value.decodeInt(command, "field '\(name)'")
    }
}
