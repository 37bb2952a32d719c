/// A Redis reply, copied out of hiredis into a Swift value (RESP2: hiredis 0.14 speaks no RESP3).
public enum RESPValue: Sendable, Hashable {
    case simpleString(String)
    case error(String)
    case integer(Int)
    case bulkString([UInt8])
    case null
    case array([RESPValue])

    /// The value as text, for simple and bulk strings (bulk strings are decoded as UTF-8, with
    /// invalid sequences replaced) and integers.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes): String(decoding: bytes, as: UTF8.self)
        case .integer(let value): String(value)
        case .error, .null, .array: nil
        }
    }

    /// The raw bytes of a bulk or simple string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): bytes
        case .simpleString(let text): Array(text.utf8)
        default: nil
        }
    }

    /// The value as an integer, for integer replies and bulk strings holding a decimal number.
    public var int: Int? {
        switch self {
        case .integer(let value): value
        case .bulkString, .simpleString: string.flatMap { Int($0) }
        default: nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// A flat RESP2 array of alternating names and values (stream entry fields, `XINFO`
    /// replies) as pairs; a trailing unpaired element is dropped. Nil if this is not an array.
    public var pairs: [(name: RESPValue, value: RESPValue)]? {
        guard let flat = array else { return nil }
        return stride(from: 0, to: flat.count - 1, by: 2).map { (flat[$0], flat[$0 + 1]) }
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The server's error message, if this is an error reply.
    public var errorMessage: String? {
        if case .error(let message) = self { return message }
        return nil
    }
}
