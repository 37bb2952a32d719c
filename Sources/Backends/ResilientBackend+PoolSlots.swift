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

    /// The member a request's conversation belongs to, when it should go there now: its home
    /// (``Tier/home(for:model:at:)``) has a slot free, pool-wide (its lease then replaces the one
    /// in `ticket`, which is given back) or, without a pool, in this worker's count. A home that
    /// is full pool-wide is waited for up to ``affinityWait`` (the lease held meanwhile is given
    /// back, for other requests). Nil: no key, affinity off, or the home stayed full, when the
    /// request goes where the usual rule sends it (the load stays bounded by the slots; the
    /// conversation's prefix is computed again there).
    func affinityPreference(for request: ChatRequest, on tier: Tier, ticket: SlotTicket?) async -> String? {
        guard affinity, tier.members.count > 1, let key = request.affinityKey else { return nil }
        let ranking = tier.homes(for: key, model: request.model, at: .now)
        guard var home = ranking.first else { return nil }
        if let directory = ledger.withLockedValue({ $0 }) as? any AffinityDirectory,
            let placed = try? await directory.home(of: key, candidates: ranking.map { ($0.name, $0.weight) }),
            let found = ranking.first(where: { $0.name == placed })
        {
            home = found
        }
        let name = home.name
        if ticket?.backend == name {
            affinityMetrics.home.increment()
            return name
        }
        if let ledger = ledger.withLockedValue({ $0 }), let candidate = tier.slotCandidate(home.index) {
            var lease = try? await ledger.acquire([candidate], count: 1).first
            if lease == nil, affinityWait > .zero {
                if let held = ticket?.take() { await ledger.release([held]) }
                let deadline = ContinuousClock.now + affinityWait
                while lease == nil, ContinuousClock.now < deadline, !Task.isCancelled {
                    let generation = slotChanges.generation
                    await slotChanges.wait(after: generation, until: min(deadline, .now + Self.poolSlotRetry))
                    lease = try? await ledger.acquire([candidate], count: 1).first
                }
            }
            guard let lease else {
                affinityMetrics.elsewhere.increment()
                return nil
            }
            if let old = ticket?.exchange(for: lease) {
                await ledger.release([old])
            } else if ticket == nil {
                // No ticket to carry it: the call takes its own lease.
                await ledger.release([lease])
            }
        } else if !tier.hasFreeSlot(home.index) {
            affinityMetrics.elsewhere.increment()
            return nil
        }
        affinityMetrics.home.increment()
        return name
    }

    /// The primary backend a conversation belongs to (its name), when affinity is on; for
    /// handing a batch's leases to the entries whose home they are.
    public func home(for request: ChatRequest) -> String? {
        guard affinity, primaries.members.count > 1, let key = request.affinityKey,
            let home = primaries.home(for: key, model: request.model, at: .now)
        else { return nil }
        return primaries.members[home.index].name
    }

    func release(_ slot: PoolSlot) async {
        guard case .lease(let lease) = slot else { return }
        await releasePoolSlots([lease])
    }
}
