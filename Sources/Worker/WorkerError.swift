
/// Why a worker stopped on its own: a problem no retry can fix, so the process should exit
/// and say so, rather than retry forever.
public struct WorkerError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// Redis refused the credentials or the ACL user (`WRONGPASS`, `NOAUTH`, `NOPERM`).
        case redisAuthentication
    }

    public let code: Code
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String {
        switch code {
        case .redisAuthentication:
            "Redis refused the credentials (check redis.url, redis.username and redis.password): \(message)"
        }
    }
}
