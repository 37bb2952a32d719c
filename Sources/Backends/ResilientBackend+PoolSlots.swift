// Pool-wide slots: when several workers share one configuration, a backend's slots belong to
// all of them. A worker takes a slot's lease (``SlotLedger``) before it reads a request, so
// work waits in the stream, where the queue rules of whichever worker gets the next free slot
// pick it, and never inside a backend that is already full.
extension ResilientBackend {
    /// What a call holds of the pool while it runs.
    enum PoolSlot {
        /// The backend has no slot limit, or the worker counts its slots alone.
        case notShared
        case lease(SlotLease)
    }

    /// How long a call waiting for a pool slot of its backend sleeps between tries.
    public static let poolSlotRetry: Duration = .milliseconds(20)

    /// Shares the backends' slots with every worker using `ledger`: set once, before the
    /// worker reads anything.
    public func shareSlots(through ledger: any SlotLedger) {
        self.ledger.withLockedValue { $0 = ledger }
    }

    /// Takes up to `count` pool slots of the backends that would serve new requests now (the
    /// primaries that let requests through, else the fallbacks').
    /// - Returns: The leases granted, possibly none (every slot is held); nil when there is
    ///   nothing to share: no ledger, no backend letting requests through, or one without a
    ///   slot limit.
    public func reservePoolSlots(upTo count: Int) async throws -> [SlotLease]? {
        guard let ledger = ledger.withLockedValue({ $0 }) else { return nil }
        let now = ContinuousClock.now
        for tier in [primaries, fallbacks] where !tier.members.isEmpty {
            guard let candidates = tier.poolCandidates(at: now) else { return nil }
            if candidates.isEmpty { continue }
            return try await ledger.acquire(candidates, count: count)
        }
        return nil
    }

    /// Gives back leases a worker took and did not use.
    public func releasePoolSlots(_ leases: [SlotLease]) async {
        guard !leases.isEmpty, let ledger = ledger.withLockedValue({ $0 }) else { return }
        await ledger.release(leases)
    }

    /// The pool slot for a call to member `index` of `tier`: the ticket's lease when it is for
    /// that member, else a new one, waiting for it until `deadline`.
    /// - Returns: Nil when no slot came free before the deadline (or the task was cancelled).
    func poolSlot(of tier: Tier, _ index: Int, ticket: SlotTicket?, deadline: ContinuousClock.Instant?) async -> PoolSlot? {
        guard let ledger = ledger.withLockedValue({ $0 }), let candidate = tier.slotCandidate(index) else {
            return .notShared
        }
        if let held = ticket?.take() {
            if held.backend == candidate.backend { return .lease(held) }
            await ledger.release([held])
        }
        while !Task.isCancelled {
            if let lease = try? await ledger.acquire([candidate], count: 1).first { return .lease(lease) }
            if let deadline, ContinuousClock.now + Self.poolSlotRetry >= deadline { return nil }
            try? await Task.sleep(for: Self.poolSlotRetry)
        }
        return nil
    }

    func release(_ slot: PoolSlot) async {
        guard case .lease(let lease) = slot else { return }
        await releasePoolSlots([lease])
    }
}
