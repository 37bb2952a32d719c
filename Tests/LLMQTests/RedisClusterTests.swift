import Foundation
@testable import LLMQRedis
import Testing


@Suite("Redis Cluster client against a real cluster", .serialized, .timeLimit(.minutes(3)), .withRedisCluster)
struct RedisClusterClientTests {
    @Test("Slots agree with CLUSTER KEYSLOT; commands reach the master owning their key, pipelined across masters")
    func routing() async throws {
        let (cluster, client) = try RedisClusterFixture.current
        let keys = (0..<300).map { "key:\($0)" } + ["{llmq}:requests", "a{b}c", "{}x", "foo{}{bar}", "foo{{bar}}zap", "ünïcödé"]
        for key in keys.prefix(40) + keys.suffix(6) {
            #expect(try await client.send("CLUSTER", "KEYSLOT", key).int == HashSlot.of(key), "\(key)")
        }
        let replies = try await client.pipeline(keys.map { RedisCommand("SET", $0, "value of \($0)") })
        #expect(replies.allSatisfy { $0 == .simpleString("OK") }, "\(replies.filter { $0 != .simpleString("OK") }.prefix(3))")
        let values = try await client.pipeline(keys.map { RedisCommand("GET", $0) })
        #expect(values.map(\.string) == keys.map { "value of \($0)" })
        // Each key is on the master that owns its slot, and only there.
        let masters = try await cluster.masters()
        #expect(masters.count == 3)
        var perMaster: [Int: Int] = [:]
        for (port, _) in masters {
            let direct = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: port))
            defer { direct.shutdown() }
            perMaster[port] = try await direct.send("DBSIZE").int
        }
        #expect(perMaster.values.reduce(0, +) == keys.count)
        #expect(perMaster.values.allSatisfy { $0 > 50 }, "keys spread over the three masters: \(perMaster)")
    }

    @Test("A slot in migration: ASK for a key already on the target (ASKING + command there), then MOVED once it is done")
    func askAndMoved() async throws {
        let (cluster, client) = try RedisClusterFixture.current
        let moved = "{m}:moved", staying = "{m}:staying"
        _ = try await client.send("SET", moved, "1")
        _ = try await client.send("SET", staying, "2")
        let slot = HashSlot.of("m")
        let source = try await cluster.masterPort(for: moved)
        let target = try await cluster.masters().keys.first { $0 != source }!
        let sourceID = try await cluster.cli(source, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let targetID = try await cluster.cli(target, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await cluster.cli(target, ["CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceID]).hasPrefix("OK"))
        #expect(try await cluster.cli(source, ["CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID]).hasPrefix("OK"))
        #expect(try await cluster.cli(source, ["MIGRATE", "127.0.0.1", String(target), "", "0", "5000", "KEYS", moved]).hasPrefix("OK"))
        // The client's map still says source: the moved key answers ASK, the other is served there.
        #expect(try await client.send("GET", moved).string == "1")
        #expect(try await client.send("GET", staying).string == "2")
        #expect(try await client.pipeline([RedisCommand("INCR", moved), RedisCommand("GET", staying)]) == [.integer(2), .bulkString(Array("2".utf8))])
        #expect(try await cluster.cli(source, ["MIGRATE", "127.0.0.1", String(target), "", "0", "5000", "KEYS", staying]).hasPrefix("OK"))
        for port in cluster.ports {
            _ = try await cluster.cli(port, ["CLUSTER", "SETSLOT", String(slot), "NODE", targetID])
        }
        // Now the source answers MOVED for both, and the client follows and learns the new owner.
        #expect(try await client.send("GET", staying).string == "2")
        #expect(try await client.send("GET", moved).string == "2")
        #expect(try await cluster.masterPort(for: moved) == target)
    }

    @Test("kill -9 of a master: commands fail while it is down, then reach the promoted replica without a new client", .withRedisCluster(nodeTimeout: 1000))
    func failover() async throws {
        let (cluster, client) = try RedisClusterFixture.current
        let key = "{f}:counter"
        _ = try await client.send("SET", key, "10")
        #expect(try await client.send(RedisCommand("WAIT", "1", "1000"), onNodeOf: key).int == 1, "the replica has the write")
        let master = try await cluster.masterPort(for: key)
        let replicas = try await cluster.replicaPorts(of: master)
        #expect(replicas.count == 1)
        await cluster.kill(port: master)
        let deadline = ContinuousClock.now + .seconds(60)
        var value: Int?
        var failures = 0
        while ContinuousClock.now < deadline {
            do {
                value = try await client.send("INCR", key).int
                break
            } catch {
                failures += 1
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(value == 11, "the write acknowledged by the replica survived the failover")
        #expect(failures > 0, "the dead master failed some commands first")
        #expect(try await cluster.masterPort(for: key) == replicas.first)
    }
}
