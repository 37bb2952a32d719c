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
    /// Redis Cluster mode: the client reads the slot map from `host:port` (or, when that one is
    /// down, from one of ``clusterNodes``) and sends each command to the master that owns its
    /// key's slot, following `MOVED` and `ASK` redirections (see ``RedisClient``).
    public var cluster = false
    /// More nodes to discover the cluster from, tried after `host:port` (cluster mode only).
    public var clusterNodes: [RedisNode] = []
    /// After each reply a worker writes, wait until this many replicas have it (`WAIT n
    /// timeout`), so that a failover cannot lose an acknowledged reply; 0 (the default) does
    /// not wait. Replication is asynchronous otherwise.
    public var waitReplicas = 0
    /// How long that `WAIT` may take; past it the reply stands, with fewer copies.
    public var waitTimeout: Duration = .seconds(1)

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

/// A Redis server's address.
public struct RedisNode: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (`[v6]:port` for an IPv6 address); nil if it is not one.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A Redis URL that could not be used.
public struct RedisURLError: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}
