import Foundation
import LLMQConfiguration
import LLMQRedis
import Logging

/// Keeps two live workers from sharing a consumer name.
///
/// Consumer names come from configuration (`consumer`, or `workerId` in older files), so two
/// processes started from one file would ask for the same name, and Redis would treat them as
/// one consumer: each could acknowledge, refresh or claim the other's entries. So a worker
/// holds a lease on its name, `<group>:consumer:<name>` (`SET NX PX`, renewed with the entries
/// in flight); a worker that finds the name leased by a live one runs as `<name>-<host>-<pid>`
/// instead and says so in its startup log. A worker that crashed holds its lease until it
/// expires (`ttl`), so a replacement started sooner gets the suffixed name too; the entries
/// the crashed one left are claimed as usual.
public final class ConsumerNameLease: Sendable {
    /// The consumer name this worker runs with.
    public let name: String
    /// Why the name differs from the one asked for; nil when it does not.
    public let note: String?
    private let key: String?
    private let token: String
    private let ttl: Duration

    private init(name: String, note: String?, key: String?, token: String, ttl: Duration) {
        self.name = name
        self.note = note
        self.key = key
        self.token = token
        self.ttl = ttl
    }

    static func key(group: String, name: String) -> String {
        "\(group):consumer:\(name)"
    }

    /// Leases `wanted`, or when a live worker holds it, `<wanted>-<host>-<pid>`.
    /// When Redis cannot be reached, runs with `wanted` unleased (and says so).
    public static func acquire(
        redis: RedisConfiguration, group: String, wanted: String, ttl: Duration,
        uniqueSuffix: String = ConfigurationLoader.defaultConsumerName()
    ) async -> ConsumerNameLease {
        let client = RedisClient(configuration: redis, name: "llmq-lease")
        defer { client.shutdown() }
        let token = UUID().uuidString
        let milliseconds = String(ttl.milliseconds)
        do {
            let key = Self.key(group: group, name: wanted)
            if try await client.send("SET", key, token, "NX", "PX", milliseconds).string == "OK" {
                return ConsumerNameLease(name: wanted, note: nil, key: key, token: token, ttl: ttl)
            }
            let alternative = "\(wanted)-\(uniqueSuffix)"
            let alternativeKey = Self.key(group: group, name: alternative)
            _ = try await client.send("SET", alternativeKey, token, "PX", milliseconds)
            return ConsumerNameLease(
                name: alternative,
                note: "consumer name \(wanted) is in use by another live worker (lease \(key)); this worker runs as \(alternative)",
                key: alternativeKey, token: token, ttl: ttl)
        } catch {
            return ConsumerNameLease(
                name: wanted, note: "could not check that consumer name \(wanted) is unused (\(error)); running with it",
                key: nil, token: token, ttl: ttl)
        }
    }

    /// Renews the lease; retakes it if it expired meanwhile (Redis restarted, a long pause).
    /// - Returns: False when another worker holds it now.
    func renew(on client: RedisClient) async throws(RedisError) -> Bool {
        guard let key else { return true }
        let result = try await Self.renewScript.run(
            on: client, keys: [key], arguments: RedisCommand(token, String(ttl.milliseconds)))
        return result.int == 1
    }

    /// Gives the name back (on a clean stop).
    func release(on client: RedisClient) async {
        guard let key else { return }
        _ = try? await Self.releaseScript.run(on: client, keys: [key], arguments: RedisCommand(token))
    }

    private static let renewScript = Script(
        source: """
            local holder = redis.call('GET', KEYS[1])
            if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
            if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
            return 0
            """)

    private static let releaseScript = Script(
        source: """
            if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
            return 0
            """)
}
