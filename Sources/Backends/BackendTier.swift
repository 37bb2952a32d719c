import Logging
import NIOConcurrencyHelpers

extension ResilientBackend {
    /// One tier of members (the primaries, or the fallbacks) with their breakers and counters.
    final class Tier: Sendable {
        let members: [Member]
        let breakers: [CircuitBreaker]
        let metrics: [BackendMetrics]
        private let state: NIOLockedValueBox<MemberSelection>
        /// Signalled whenever a slot is given back.
        let slotChanges: SlotChanges

        init(members: [Member], breaker: BreakerPolicy, slotChanges: SlotChanges) {
            self.slotChanges = slotChanges
            self.members = members
            self.breakers = members.map { CircuitBreaker(policy: breaker, backend: $0.name) }
            self.metrics = members.map { BackendMetrics(backend: $0.name) }
            self.state = NIOLockedValueBox(MemberSelection(
                profiles: members.map { .init(models: $0.models, weight: $0.weight) }, slots: members.map(\.slots)))
        }

        /// What ``choose(model:deadline:)`` found.
        enum Choice {
            /// This member, with its breaker permission (a probe or not) and a slot taken.
            case member(index: Int, isProbe: Bool)
            /// No member serving the model lets requests through.
            case unavailable
            /// Every member that could take it stayed full until the deadline.
            case full
        }

        /// The member for the next call: serving the model, its breaker letting requests
        /// through, a free slot, then furthest behind its weight. Takes its breaker permission
        /// (a probe, when the breaker's open period is over) and a slot in the same critical
        /// section as the check, so two requests never take one free slot; when every such
        /// member is full, waits for a slot to be given back (``finished(_:)``), not polling.
        func choose(model: String?, preferring preferred: String? = nil, deadline: ContinuousClock.Instant?) async -> Choice {
            let preferredIndex = preferred.flatMap { name in members.firstIndex { $0.name == name } }
            while true {
                let generation = slotChanges.generation
                let now = ContinuousClock.now
                let choice: Choice? = state.withLockedValue { selection in
                    var refused: Set<Int> = []
                    while true {
                        switch selection.pick(model: model, excluding: refused, preferred: preferredIndex, isAvailable: { isAvailable($0, at: now) }) {
                        case .unavailable: return .unavailable
                        // All full: wait for a slot rather than overfill a backend.
                        case .full: return nil
                        case .member(let index):
                            switch breakers[index].permission(at: now) {
                            case .denied:
                                refused.insert(index)  // another request took the probe first
                            case .granted(let isProbe):
                                selection.start(index)
                                return .member(index: index, isProbe: isProbe)
                            }
                        }
                    }
                }
                if let choice { return choice }
                if let deadline, ContinuousClock.now >= deadline { return .full }
                if Task.isCancelled { return .unavailable }
                await slotChanges.wait(after: generation, until: deadline)
            }
        }

        private func isAvailable(_ index: Int, at now: ContinuousClock.Instant) -> Bool {
            breakers[index].timeUntilProbe(at: now) == nil
        }

        /// Asks each member whose slot count is not known yet (none configured, none learned) for
        /// it (llama-server's `/props`). One that does not answer starts with 1 slot and its
        /// breaker open, so it joins when a probe succeeds; a server that cannot tell keeps no
        /// limit.
        func discoverSlots(openWhenDown: Bool, logger: Logger) async {
            let unknown = state.withLockedValue { selection in members.indices.filter { selection.slots[$0] == nil } }
            for index in unknown {
                let member = members[index]
                let discovered = await member.backend.parallelSlots()
                if let discovered {
                    state.withLockedValue { $0.slots[index] = discovered }
                    logger.info("backend slots", metadata: ["llmq.backend": "\(member.name)", "llmq.slots": "\(discovered)"])
                } else if member.backend.reportsSlots && openWhenDown {
                    state.withLockedValue { $0.slots[index] = 1 }
                    breakers[index].open()
                    logger.warning("backend not answering at start; it joins when a probe succeeds", metadata: ["llmq.backend": "\(member.name)"])
                }
            }
        }

        /// Whether a member that can say how many slots it has (llama-server) has not said yet.
        var lacksSlots: Bool {
            state.withLockedValue { selection in
                members.indices.contains { members[$0].backend.reportsSlots && selection.slots[$0] == nil }
            }
        }

        func finished(_ index: Int) {
            state.withLockedValue { $0.finish(index) }
            slotChanges.signal()
        }

        var inFlight: Int { state.withLockedValue { $0.inFlight.reduce(0, +) } }

        /// A member as the pool's ledger weighs it (nil: it has no slot limit).
        /// The member a conversation belongs to (``MemberSelection/home(for:model:isAvailable:names:)``)
        /// and whether it has a slot free in this worker's count.
        func home(for key: String, model: String?, at now: ContinuousClock.Instant) -> (index: Int, hasFreeSlot: Bool)? {
            let names = members.map(\.name)
            return state.withLockedValue { selection in
                selection.home(for: key, model: model, isAvailable: { isAvailable($0, at: now) }, names: names)
                    .map { ($0, selection.hasFreeSlot($0)) }
            }
        }

        /// The members a conversation may live on, in its rendezvous order, with their weights.
        func homes(for key: String, model: String?, at now: ContinuousClock.Instant) -> [(index: Int, name: String, weight: Double)] {
            let names = members.map(\.name)
            return state.withLockedValue { selection in
                selection.homes(for: key, model: model, isAvailable: { isAvailable($0, at: now) }, names: names)
                    .map { ($0, names[$0], selection.weight($0)) }
            }
        }

        func hasFreeSlot(_ index: Int) -> Bool {
            state.withLockedValue { $0.hasFreeSlot(index) }
        }

        func slotCandidate(_ index: Int) -> SlotCandidate? {
            state.withLockedValue { $0.poolCandidate(index, name: members[index].name) }
        }

        /// The members that let requests through, for the pool's ledger (see
        /// ``MemberSelection/poolCandidates(names:isAvailable:)``).
        func poolCandidates(at now: ContinuousClock.Instant) -> [SlotCandidate]? {
            let names = members.map(\.name)
            return state.withLockedValue { $0.poolCandidates(names: names, isAvailable: { isAvailable($0, at: now) }) }
        }

        /// Free slots of the members whose breakers let requests through: `.unlimited` when one
        /// of them has no slot limit, `.none` when no member lets requests through.
        func freeSlots(at now: ContinuousClock.Instant) -> MemberSelection.FreeSlots {
            state.withLockedValue { $0.freeSlots(isAvailable: { isAvailable($0, at: now) }) }
        }

        /// When the first breaker lets a probe through; nil when one lets requests through now.
        func timeUntilAvailable(at now: ContinuousClock.Instant) -> Duration? {
            var soonest: Duration?
            for breaker in breakers {
                guard let wait = breaker.timeUntilProbe(at: now) else { return nil }
                soonest = min(soonest ?? wait, wait)
            }
            return soonest
        }

        func serves(_ model: String?) -> Bool {
            members.contains { $0.serves(model) }
        }
    }
}
