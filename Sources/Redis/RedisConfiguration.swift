import Foundation

/// Where and how to connect to Redis.
public struct RedisConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?
    public var database: Int
    /// Time allowed to establish the TCP connection.
    public var connectTimeout: Duration
    /// Time allowed for one command's round trip. A client that issues blocking commands
    /// (`XREADGROUP ... BLOCK`) needs this above the block time.
    public var commandTimeout: Duration

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(5),
        commandTimeout: Duration = .seconds(10)
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]`.
    /// - Throws: ``RedisURLError`` naming what is wrong with the URL.
    public init(url: String) throws(RedisURLError) {
        guard let components = URLComponents(string: url), let scheme = components.scheme else {
            throw RedisURLError(reason: "not a URL; expected redis://[user:password@]host[:port][/db]")
        }
        guard scheme == "redis" else {
            throw RedisURLError(reason: "scheme \"\(scheme)\" is not supported; use redis:// (TLS is not supported)")
        }
        guard let host = components.host, !host.isEmpty else {
            throw RedisURLError(reason: "no host; expected redis://host:port")
        }
        self.init(host: host, port: components.port ?? 6379)
        if let port = components.port, !(1...65535).contains(port) {
            throw RedisURLError(reason: "port \(port) is out of range")
        }
        if let user = components.user, !user.isEmpty {
            self.username = user.removingPercentEncoding ?? user
        }
        if let password = components.password, !password.isEmpty {
            self.password = password.removingPercentEncoding ?? password
        }
        let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if !path.isEmpty {
            guard let database = Int(path), database >= 0 else {
                throw RedisURLError(reason: "database \"\(path)\" is not a number")
            }
            self.database = database
        }
    }
}

/// A Redis URL that could not be used.
public struct RedisURLError: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}
