/// An error from the Redis layer.
///
/// What a caller may do next depends on the error's kind, not on where it came from: a
/// ``isTransient`` error (the connection broke, or the server is out of memory, loading, busy
/// with a script, read-only during a failover, ...) is retried with backoff and never turned into
/// a permanent decision; anything else is about the command itself, and retrying it unchanged
/// cannot help.
public struct RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// No connection could be made, or the connection broke: the command may or may not have run.
        case connection
        /// The server answered with an error reply.
        case server
        /// The server refused the credentials (wrong password or ACL user): retrying cannot help.
        case authentication
        /// The reply had a shape the caller did not expect.
        case unexpectedReply
        /// The client was shut down.
        case shutdown
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// True for server errors whose message starts with `prefix` (e.g. "NOSCRIPT", "BUSYGROUP").
    public func isServerError(_ prefix: String) -> Bool {
        code == .server && message.hasPrefix(prefix)
    }

    /// Whether the same command may succeed later unchanged: a broken connection, or a server
    /// error that describes the server's state rather than the command (``transientPrefixes``).
    public var isTransient: Bool {
        switch code {
        case .connection: true
        case .server: Self.isTransient(serverError: message)
        case .authentication, .unexpectedReply, .shutdown: false
        }
    }

    /// Error codes that say the server cannot take the command now but may soon: out of memory
    /// (`maxmemory` with `noeviction`), loading its data set, a script or module busy, writes
    /// refused after a failed `BGSAVE`, a replica (read-only) during a failover, a slot being
    /// migrated, a cluster without a majority, a master without replicas for `min-replicas`.
    public static let transientPrefixes = [
        "OOM", "LOADING", "BUSY ", "MISCONF", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOREPLICAS",
        "UNBLOCKED",
    ]

    /// Whether an error reply's message describes a transient state of the server.
    public static func isTransient(serverError message: String) -> Bool {
        // A script's error keeps the code of the command that failed inside it.
        let start = message.drop { $0 == "-" }
        return transientPrefixes.contains { start.hasPrefix($0) } || start == "BUSY"
    }

    /// For a `WRONGTYPE` error that names its key (llmq's scripts name it as `WRONGTYPE key
    /// <key> ...`), that key: the error is about that key only.
    public var wrongTypeKey: String? {
        guard code == .server, message.hasPrefix("WRONGTYPE key ") else { return nil }
        return message.dropFirst("WRONGTYPE key ".count).split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    /// True when the server refused who we are or what we may do (`WRONGPASS`, `NOAUTH`,
    /// `NOPERM`): a configuration problem that no retry fixes.
    public var isAuthenticationFailure: Bool {
        code == .authentication || code == .server && Self.isRefusal(message)
    }

    /// Whether an error reply refuses the credentials or the ACL user's rights.
    static func isRefusal(_ message: String) -> Bool {
        ["WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH", "ERR invalid password", "ERR Client sent AUTH"]
            .contains { message.hasPrefix($0) }
    }

    public var description: String {
        switch code {
        case .connection: "Redis connection error: \(message)"
        case .server: "Redis error: \(message)"
        case .authentication: "Redis refused the credentials: \(message)"
        case .unexpectedReply: "unexpected Redis reply: \(message)"
        case .shutdown: "Redis client shut down"
        }
    }
}
