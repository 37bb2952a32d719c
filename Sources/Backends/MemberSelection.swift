import Foundation

/// Which member of a tier takes the next call, and the counts that decide it.
///
/// A value without locks, clocks or backends: ``ResilientBackend/Tier`` keeps it behind its
/// lock and says which members' breakers let requests through; tests drive it directly. Among
/// the members that serve the model, let requests through, have a positive weight and a free
/// slot, the one furthest behind its weight in recent starts is picked (ties: fewer in
/// flight), so weights 9 and 1 split traffic 90/10 and weights equal to the slot counts split
/// it by capacity.
struct MemberSelection: Sendable {
    /// What the selection knows of a member.
    struct Profile: Sendable {
        /// The models it serves; nil: any.
        var models: Set<String>?
        /// Its share; nil: its slot count (or 1).
        var weight: Double?

        func serves(_ model: String?) -> Bool {
            guard let model, let models else { return true }
            return models.contains(model)
        }
    }

    /// What ``pick(model:excluding:isAvailable:)`` found.
    enum Pick: Equatable {
        case member(Int)
        /// Members could take it, but every one of them is full.
        case full
        /// No member serving the model lets requests through.
        case unavailable
    }

    /// Free slots of the members that let requests through.
    enum FreeSlots: Equatable {
        /// One of them has no slot limit.
        case unlimited
        case count(Int)
        /// None lets requests through.
        case none
    }

    let profiles: [Profile]
    /// Each member's slots: configured, learned at start, or nil (no limit).
    var slots: [Int?]
    private(set) var inFlight: [Int]
    /// Starts, decaying (each start multiplies all by `1 - 1/64`), for the weights.
    private(set) var recentStarts: [Double]

    init(profiles: [Profile], slots: [Int?]) {
        precondition(profiles.count == slots.count)
        self.profiles = profiles
        self.slots = slots
        self.inFlight = Array(repeating: 0, count: profiles.count)
        self.recentStarts = Array(repeating: 0, count: profiles.count)
    }

    /// A member's weight: configured, else its slots (so traffic follows capacity), else 1.
    func weight(_ index: Int) -> Double {
        profiles[index].weight ?? Double(slots[index] ?? 1)
    }

    func hasFreeSlot(_ index: Int) -> Bool {
        slots[index].map { inFlight[index] < $0 } ?? true
    }

    /// The member for the next call, leaving out `excluded` ones (whose breaker refused).
    /// - Parameters:
    ///   - preferred: Taken when it is eligible and has a free slot (the member whose pool
    ///     slot the request holds already), whatever the weights say.
    ///   - isAvailable: Whether a member's breaker lets requests (or a probe) through.
    func pick(model: String?, excluding excluded: Set<Int> = [], preferred: Int? = nil, isAvailable: (Int) -> Bool) -> Pick {
        let eligible = profiles.indices.filter { index in
            !excluded.contains(index) && profiles[index].serves(model) && weight(index) > 0 && isAvailable(index)
        }
        if eligible.isEmpty { return .unavailable }
        let free = eligible.filter(hasFreeSlot)
        if let preferred, free.contains(preferred) { return .member(preferred) }
        let chosen = free.min { left, right in
            let l = recentStarts[left] / weight(left)
            let r = recentStarts[right] / weight(right)
            if l != r { return l < r }
            return inFlight[left] < inFlight[right]
        }
        return chosen.map(Pick.member) ?? .full
    }

    /// The member a conversation belongs to: rendezvous (highest random weight) hashing of
    /// `key` over the members that serve the model, let requests through and have a weight,
    /// each score scaled by the weight, so conversations spread in the ratio of the weights and
    /// a member that leaves or joins moves only its own share of them. Nil when none qualifies.
    func home(for key: String, model: String?, isAvailable: (Int) -> Bool, names: [String]) -> Int? {
        homes(for: key, model: model, isAvailable: isAvailable, names: names).first
    }

    /// The qualifying members in the conversation's rendezvous order, best first: where it goes
    /// when the pool bounds each member's share of conversations (``AffinityDirectory``).
    func homes(for key: String, model: String?, isAvailable: (Int) -> Bool, names: [String]) -> [Int] {
        profiles.indices.filter { profiles[$0].serves(model) && weight($0) > 0 && isAvailable($0) }
            .map { ($0, Self.score(key, names[$0], weight($0))) }
            .sorted { $0.1 > $1.1 }.map(\.0)
    }

    /// Weighted rendezvous score: `-weight / ln(u)` for `u` uniform in (0, 1) from a stable hash
    /// of the key and the member's name (FNV-1a, the same in every worker and release).
    static func score(_ key: String, _ name: String, _ weight: Double) -> Double {
        var hash = stableHash(key.utf8 + [0] + name.utf8)
        // Mix the bits (FNV's low bits are weak) and map to (0, 1).
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        let unit = (Double(hash >> 11) + 0.5) / Double(UInt64(1) << 53)
        return -weight / log(unit)
    }

    /// A call to `index` starts: it holds a slot, and counts against its weight.
    mutating func start(_ index: Int) {
        inFlight[index] += 1
        for member in recentStarts.indices { recentStarts[member] *= 1 - 1.0 / 64 }
        recentStarts[index] += 1
    }

    /// A call to `index` ended: its slot is free again.
    mutating func finish(_ index: Int) {
        inFlight[index] -= 1
    }

    /// The members that let requests through with their slots and weights, for the pool's
    /// ledger: nil when one of them has no slot limit (nothing to share), empty when none lets
    /// requests through.
    func poolCandidates(names: [String], isAvailable: (Int) -> Bool) -> [SlotCandidate]? {
        var candidates: [SlotCandidate] = []
        for index in profiles.indices where isAvailable(index) && weight(index) > 0 {
            guard let candidate = poolCandidate(index, name: names[index]) else { return nil }
            candidates.append(candidate)
        }
        return candidates
    }

    /// Member `index` as the pool's ledger weighs it: its slots, weight and recent starts; nil
    /// when it has no slot limit.
    func poolCandidate(_ index: Int, name: String) -> SlotCandidate? {
        slots[index].map { SlotCandidate(backend: name, slots: $0, weight: weight(index), starts: recentStarts[index]) }
    }

    func freeSlots(isAvailable: (Int) -> Bool) -> FreeSlots {
        var total = 0
        var available = false
        for index in profiles.indices where isAvailable(index) && weight(index) > 0 {
            available = true
            guard let slots = slots[index] else { return .unlimited }
            total += max(0, slots - inFlight[index])
        }
        return available ? .count(total) : .none
    }
}

/// FNV-1a of `bytes`: the same in every worker, release and platform (Swift's `Hasher` is seeded
/// per process), for what the workers of a pool must agree on, such as a conversation's home.
package func stableHash(_ bytes: some Sequence<UInt8>) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return hash
}
