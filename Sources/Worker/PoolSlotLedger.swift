import Foundation
import LLMQBackends
import LLMQRedis
import NIOConcurrencyHelpers

/// The pool's slot leases in Redis: one sorted set per backend, `<streams.slots>:<backend>`,
/// whose members are lease IDs scored by their expiry (Redis's clock, `TIME`, so workers'
/// clocks do not matter). Taking, extending and giving back are each one script call.
///
/// A worker renews the leases it holds every third of their duration (``renew()``); one that
/// crashes or stalls stops renewing, and its leases are dropped by the next acquire after they
/// expire, so its slots come back within one lease duration.
final class PoolSlotLedger: SlotLedger, AffinityDirectory {
    private struct State {
        var calls = 0
        var held: Set<SlotLease> = []
    }

    let client: RedisClient
    /// The keys' prefix (`streams.slots`).
    let prefix: String
    let consumer: String
    let leaseDuration: Duration
    private let state = NIOLockedValueBox(State())

    init(client: RedisClient, prefix: String, consumer: String, leaseDuration: Duration) {
        self.client = client
        self.prefix = prefix
        self.consumer = consumer
        self.leaseDuration = leaseDuration
    }

    /// The sorted set of `backend`'s leases.
    func key(_ backend: String) -> String { prefix + ":" + backend }

    /// Leases this worker holds now.
    var held: Int { state.withLockedValue { $0.held.count } }

    func acquire(_ candidates: [SlotCandidate], count: Int) async throws -> [SlotLease] {
        guard count > 0, !candidates.isEmpty else { return [] }
        let call = state.withLockedValue { state in
            defer { state.calls += 1 }
            return state.calls
        }
        // Consumer names are unique in the group (a configured one is leased), so this is too.
        var arguments = RedisCommand(String(count), String(leaseDuration.milliseconds), "\(consumer):\(call)")
        for candidate in candidates {
            arguments.append(String(candidate.slots))
            arguments.append(String(candidate.weight))
            arguments.append(String(candidate.starts))
        }
        let reply = try await Scripts.acquireSlots.run(on: client, keys: candidates.map { key($0.backend) }, arguments: arguments)
        let flat = try reply.decodeArray("slots_acquire script", "reply")
        var leases: [SlotLease] = []
        for pair in stride(from: 0, to: flat.count - 1, by: 2) {
            guard let index = flat[pair].int, candidates.indices.contains(index - 1), let id = flat[pair + 1].string else {
                throw RedisError(.unexpectedReply, "slots_acquire script: lease \(pair / 2) is not an index and an ID")
            }
            leases.append(SlotLease(backend: candidates[index - 1].backend, id: id))
        }
        state.withLockedValue { $0.held.formUnion(leases) }
        return leases
    }

    func release(_ leases: [SlotLease]) async {
        guard !leases.isEmpty else { return }
        state.withLockedValue { $0.held.subtract(leases) }
        // Not given back (Redis away): the lease expires.
        _ = try? await Scripts.releaseSlots.run(
            on: client, keys: leases.map { key($0.backend) }, arguments: RedisCommand(leases.map(\.id)))
    }

    /// How much more than its weight's share of the live conversations a backend may be home
    /// to (consistent hashing with bounded loads).
    static let affinityLoadFactor = 1.25
    /// A conversation idle this long loses its home (its prefix is likely gone from the cache).
    static let affinityLifetime: Duration = .seconds(600)

    /// The conversation's home (``Scripts/affinityHome``); keys under `<prefix>:affinity:`,
    /// the conversation by a 64-bit hash of its key.
    func home(of key: String, candidates: [(backend: String, weight: Double)]) async throws -> String {
        let hash = stableHash(key.utf8)
        var arguments = RedisCommand(
            prefix + ":affinity:members:", String(Self.affinityLifetime.milliseconds), String(Self.affinityLoadFactor))
        for candidate in candidates {
            arguments.append(candidate.backend)
            arguments.append(String(candidate.weight))
        }
        let reply = try await Scripts.affinityHome.run(
            on: client, keys: [prefix + ":affinity:home:" + String(hash, radix: 16)], arguments: arguments)
        return try reply.decodeString("affinity_home script", "reply")
    }

    /// Extends every lease held. Returns how many were lost: they had expired (the worker did
    /// not renew in time) and another worker's acquire dropped them.
    func renew() async throws(RedisError) -> Int {
        let leases = Array(state.withLockedValue { $0.held })
        guard !leases.isEmpty else { return 0 }
        var arguments = RedisCommand(String(leaseDuration.milliseconds))
        for lease in leases { arguments.append(lease.id) }
        let lost = Set(try await Scripts.renewSlots.run(
            on: client, keys: leases.map { key($0.backend) }, arguments: arguments
        ).decodeStrings("slots_renew script"))
        if !lost.isEmpty { state.withLockedValue { $0.held.subtract(leases.filter { lost.contains($0.id) }) } }
        return lost.count
    }
}
