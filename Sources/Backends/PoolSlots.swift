import NIOConcurrencyHelpers

/// One slot of a backend held for the whole pool of workers: while a worker holds it, no other
/// worker sharing the configuration can send that backend a request in its place.
public struct SlotLease: Sendable, Hashable {
    /// The member's name (``ResilientBackend/Member``), which names its leases' key.
    public var backend: String
    /// Unique among the pool's leases.
    public var id: String

    public init(backend: String, id: String) {
        self.backend = backend
        self.id = id
    }
}

/// A backend the pool may take slots of, as ``SlotLedger/acquire(_:count:)`` weighs it.
public struct SlotCandidate: Sendable, Hashable {
    public var backend: String
    /// Leases held at once at most, by all workers together.
    public var slots: Int
    /// Its share of the starts.
    public var weight: Double
    /// Its recent starts, as this worker counts them: each slot goes to the candidate with a
    /// free slot that is furthest behind its weight, as ``MemberSelection`` picks a member.
    public var starts: Double

    public init(backend: String, slots: Int, weight: Double, starts: Double = 0) {
        self.backend = backend
        self.slots = slots
        self.weight = weight
        self.starts = starts
    }
}

/// Where the pool's slot leases live, shared by every worker (Redis, for llmq's workers).
///
/// A lease expires unless its holder renews it, so a worker that crashes or stalls gives its
/// slots back on its own. The backends know nothing of where the ledger keeps them.
public protocol SlotLedger: Sendable {
    /// Takes up to `count` free slots among `candidates`, each to the candidate with a free slot
    /// that is furthest behind its weight in starts; none when every one is full.
    func acquire(_ candidates: [SlotCandidate], count: Int) async throws -> [SlotLease]
    /// Gives leases back. A lease that cannot be given back (Redis away) expires.
    func release(_ leases: [SlotLease]) async
}

/// Where the pool's conversations live (conversation affinity): one answer for every worker.
public protocol AffinityDirectory: Sendable {
    /// The backend conversation `key` is homed on, among `candidates` (in its rendezvous order,
    /// with their weights): its home while that is a candidate, else the first with room.
    func home(of key: String, candidates: [(backend: String, weight: Double)]) async throws -> String
}

/// A request's pool slot from intake to its backend call: the worker takes a lease before it
/// reads the request, the pool uses it for the call when the lease's backend serves it, and
/// whatever is left is given back when the request ends.
public final class SlotTicket: Sendable {
    private let lease: NIOLockedValueBox<SlotLease?>

    public init(_ lease: SlotLease?) {
        self.lease = NIOLockedValueBox(lease)
    }

    /// The backend of the lease still held here, if any.
    public var backend: String? { lease.withLockedValue { $0?.backend } }

    /// Holds `new` in place of the lease held until now, which the caller now holds (and must
    /// give back).
    public func exchange(for new: SlotLease) -> SlotLease? {
        lease.withLockedValue { lease in
            defer { lease = new }
            return lease
        }
    }

    /// The lease, which the caller now holds (and must give back); nil when taken already.
    public func take() -> SlotLease? {
        lease.withLockedValue { lease in
            defer { lease = nil }
            return lease
        }
    }
}
