/// One Redis command as an argument vector. Arguments are bytes, so any value is binary safe;
/// they are stored back to back in one buffer so that building a command allocates little.
public struct RedisCommand: Sendable, Hashable, CustomStringConvertible {
    @usableFromInline var storage: [UInt8] = []
    @usableFromInline var lengths: [Int] = []

    public init(_ arguments: String...) {
        self.init(arguments)
    }

    public init(_ arguments: [String]) {
        lengths.reserveCapacity(arguments.count + 8)
        for argument in arguments { append(argument) }
    }

    @inlinable
    public mutating func append(_ argument: String) {
        var argument = argument
        argument.withUTF8 { storage.append(contentsOf: $0) }
        lengths.append(argument.utf8.count)
    }

    @inlinable
    public mutating func append<Bytes: Collection<UInt8>>(bytes argument: Bytes) {
        storage.append(contentsOf: argument)
        lengths.append(argument.count)
    }

    /// Appends every argument of `other`, in order.
    @inlinable
    public mutating func append(contentsOf other: RedisCommand) {
        storage.append(contentsOf: other.storage)
        lengths.append(contentsOf: other.lengths)
    }

    /// Appends each name and then its value, in order (the fields of a stream entry or hash).
    public mutating func append(fields: [(String, String)]) {
        for (name, value) in fields {
            append(name)
            append(value)
        }
    }

    @inlinable
    public mutating func append(_ argument: Int) {
        append(String(argument))
    }

    public var argumentCount: Int { lengths.count }

    /// The command's arguments as text (for logs and tests).
    public var arguments: [String] {
        var result: [String] = []
        var offset = 0
        for length in lengths {
            result.append(String(decoding: storage[offset..<offset + length], as: UTF8.self))
            offset += length
        }
        return result
    }

    /// The command name only: arguments may hold prompt text, which must not reach logs.
    public var description: String {
        arguments.first ?? ""
    }
}
