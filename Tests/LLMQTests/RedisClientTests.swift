import Foundation
import LLMQRedis
import Testing

@Suite("Redis layer against a real redis-server")
struct RedisClientTests {
    @Test("commands are binary safe and replies are copied into Swift values", .withRedis)
    func binarySafeRoundTrip() async throws {
        let client = try RedisFixture.current.client
        let value: [UInt8] = [0, 1, 2, 13, 10, 255, 0x24, 0x2A]
        var set = RedisCommand("SET", "binary")
        set.append(bytes: value)
        #expect(try await client.send(set) == .simpleString("OK"))
        #expect(try await client.send("GET", "binary") == .bulkString(value))
        #expect(try await client.send("GET", "missing") == .null)
        #expect(try await client.send("INCRBY", "counter", "41") == .integer(41))
        #expect(try await client.send("RPUSH", "list", "a", "b").int == 2)
        #expect(try await client.send("LRANGE", "list", "0", "-1") == .array([.bulkString(Array("a".utf8)), .bulkString(Array("b".utf8))]))
    }

    @Test("an error reply throws a server error; in a pipeline it stays in its place", .withRedis)
    func errorReplies() async throws {
        let client = try RedisFixture.current.client
        await #expect(throws: RedisError.self) { try await client.send("NOSUCHCOMMAND") }
        let replies = try await client.pipeline([RedisCommand("SET", "k", "v"), RedisCommand("INCR", "k"), RedisCommand("GET", "k")])
        #expect(replies.count == 3)
        #expect(replies[1].errorMessage?.hasPrefix("ERR") == true)
        #expect(replies[2].string == "v")
    }

    @Test("concurrent callers are pipelined and each gets its own reply", .withRedis)
    func concurrentCallers() async throws {
        let client = try RedisFixture.current.client
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<500 {
                group.addTask {
                    let reply = try await client.send("ECHO", "value-\(index)")
                    #expect(reply.string == "value-\(index)")
                }
            }
            try await group.waitForAll()
        }
    }

    @Test("a restarted server is reconnected to on the next command", .withRedis)
    func reconnects() async throws {
        let (server, client) = try RedisFixture.current
        #expect(try await client.send("PING") == .simpleString("PONG"))
        try await server.restart()
        // The first command after the restart may find the old connection broken.
        var reply: RESPValue?
        for _ in 0..<5 {
            if let value = try? await client.send("PING") {
                reply = value
                break
            }
        }
        #expect(reply == .simpleString("PONG"))
    }

    @Test("a refused connection is a connection error, not a crash")
    func refused() async throws {
        let client = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: try freePort()))
        defer { client.shutdown() }
        await #expect {
            try await client.send("PING")
        } throws: { error in
            (error as? RedisError)?.code == .connection
        }
    }

    @Test("passwords and databases come from the URL")
    func urlParsing() throws {
        let configuration = try RedisConfiguration(url: "redis://alice:s%40cret@cache.local:6380/3")
        #expect(configuration.host == "cache.local")
        #expect(configuration.port == 6380)
        #expect(configuration.username == "alice")
        #expect(configuration.password == "s@cret")
        #expect(configuration.database == 3)
        #expect(throws: RedisURLError.self) { try RedisConfiguration(url: "http://localhost") }
        #expect(throws: RedisURLError.self) { try RedisConfiguration(url: "redis://localhost/x") }
    }

    @Test("AUTH with a password from the URL", .withRedis)
    func authenticates() async throws {
        let server = try RedisFixture.current.server
        try await server.redisCLI(["CONFIG", "SET", "requirepass", "hunter2"])
        var configuration = server.configuration
        configuration.password = "hunter2"
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        #expect(try await client.send("PING") == .simpleString("PONG"))
        var wrong = server.configuration
        wrong.password = "nope"
        let rejected = RedisClient(configuration: wrong)
        defer { rejected.shutdown() }
        await #expect(throws: RedisError.self) { try await rejected.send("PING") }
    }
}
