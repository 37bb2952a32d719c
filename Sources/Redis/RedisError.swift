/// An error from the Redis layer.
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
