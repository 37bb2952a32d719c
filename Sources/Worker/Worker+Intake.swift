import Foundation
import LLMQBackends
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

// Intake: claiming abandoned entries, reading new ones by the queues' plan, and starting a
// task for each.
extension Worker {
    /// Reads until stopped. Returns an error that no retry can fix (Redis refused the
    /// credentials), after which the worker must stop.
    func readLoop(group: inout DiscardingTaskGroup) async -> WorkerError? {
        var failures = 0
        var groupReady = false
        var claimCursors = Array(repeating: "0-0", count: queues.count)
        var nextClaim = ContinuousClock.now
        var scheduler = IntakeScheduler(queues: queues.map { .init(priority: $0.priority, weight: $0.weight, minimumShare: $0.minimumShare) })
        while !stopping {
            health.enter(.working)
            do {
                if !groupReady {
                    try await prepareGroups()
                    groupReady = true
                    if failures > 0 { logger.info("connected to Redis again") }
                }
                guard var free = try await freeSlots(), !stopping else { continue }
                // With the slots shared by the pool, a lease for each entry before reading it.
                let generation = backend.slotChanges.generation
                let leases = try await backend.reservePoolSlots(upTo: free)
                if let leases {
                    guard !leases.isEmpty else {
                        await waitForPoolSlot(after: generation)
                        continue
                    }
                    free = leases.count
                }

                // Whatever is taken is started, even when a later command of this round fails:
                // taken entries are pending on this consumer, and left alone they would wait
                // for a claim and come back with one more delivery.
                var taken: [RequestStream.Delivery] = []
                var failure: RedisError?
                var watch = ArrivalWatch()
                do throws(RedisError) {
                    try await take(
                        free: free, into: &taken, claimCursors: &claimCursors, nextClaim: &nextClaim, scheduler: &scheduler,
                        watch: &watch, waitWhenEmpty: leases == nil)
                } catch {
                    failure = error
                }
                let unused = start(taken, leases: leases ?? [], group: &group)
                await backend.releasePoolSlots(unused)
                if let failure { throw failure }
                if leases != nil && taken.isEmpty {
                    // Nothing waiting: watch the queues without holding the pool's slots.
                    try await waitForNewEntries(watch)
                }
                failures = 0
                health.redisSucceeded(groupReady: true)
            } catch let error as RedisError {
                if stopping { break }
                health.redisFailed(error.description)
                if error.isAuthenticationFailure {
                    stream.reader.interrupt()
                    return WorkerError(.redisAuthentication, error.message)
                }
                if error.isServerError("NOGROUP") {
                    // The stream or group was deleted (or Redis lost its data): create it again.
                    groupReady = false
                    logger.warning("consumer group missing; creating it again")
                    continue
                }
                failures += 1
                groupReady = groupReady && error.code != .connection
                let wait = Backoff.redisRead.delay(afterFailures: failures)
                logger.warning("Redis unavailable; retrying", metadata: [
                    "llmq.error": "\(error)", "llmq.retry_in_ms": "\(wait.milliseconds)",
                ])
                try? await Task.sleep(for: wait)
            } catch {
                // Cancellation while waiting for the backend's circuit.
                if stopping { break }
            }
        }
        stream.reader.interrupt()
        return nil
    }

    /// Creates each queue's group where missing and loads the chunk script.
    private func prepareGroups() async throws(RedisError) {
        for queue in queues { try await stream.ensureGroup(on: queue.stream) }
        // Chunk writes are pipelined from the Redis thread as EVALSHA, which needs the script's
        // SHA-1 (a server that lost it answers NOSCRIPT; they fall back).
        try await Scripts.chunks.load(on: stream.writer)
        health.redisSucceeded(groupReady: true)
        _ = readiness()
    }

    /// Waits until the backends can take requests and this worker has a free slot.
    /// - Returns: How many entries to take now: only as many as the backends have free slots
    ///   for, so that work waits in the stream, where any worker can take it, not inside one
    ///   busy backend. Nil when none (after waiting for a backend slot to be given back).
    private func freeSlots() async throws -> Int? {
        health.enter(.waitingForBackend)
        try await backend.waitUntilAvailable()
        health.enter(.waitingForSlot)
        let backendGeneration = backend.slotChanges.generation
        var free = await slots.waitForFree()
        if let backendSlots = backend.freeSlots {
            // Requests taken but not yet at a backend will use some of those slots.
            let waiting = max(0, slots.inUse - backend.inFlight)
            free = min(free, max(0, backendSlots - waiting))
            if free == 0 {
                // Woken when a backend slot is given back (or a breaker's state may have
                // changed, hence the bound).
                await backend.slotChanges.wait(after: backendGeneration, until: .now + .milliseconds(100))
                return nil
            }
        }
        health.enter(.working)
        return free == 0 ? nil : free
    }

    /// Waits for a pool slot to be given back: woken at once when this worker gives one back
    /// (after `generation`), else it asks again after about ``ResilientBackend/poolSlotRetry``
    /// (each worker a little apart), for slots other workers give back.
    private func waitForPoolSlot(after generation: UInt64) async {
        health.enter(.waitingForSlot)
        let wait = ResilientBackend.poolSlotRetry * Double.random(in: 0.5...1.5)
        await backend.slotChanges.wait(after: generation, until: .now + wait)
    }

    /// Takes up to `free` entries into `taken`: entries abandoned by dead consumers first (every
    /// `claimInterval`, by priority), else new ones. Entries are appended as each command
    /// returns them, so a failure later in the round loses none.
    /// - Parameter waitWhenEmpty: With nothing waiting anywhere, watch the queues for up to
    ///   `readBlock` (false: return at once, the caller waits).
    func take(
        free: Int, into taken: inout [RequestStream.Delivery], claimCursors: inout [String],
        nextClaim: inout ContinuousClock.Instant, scheduler: inout IntakeScheduler, watch: inout ArrivalWatch,
        waitWhenEmpty: Bool = true
    ) async throws(RedisError) {
        if ContinuousClock.now >= nextClaim {
            nextClaim = ContinuousClock.now + configuration.recovery.claimInterval
            for (index, queue) in queues.enumerated() where taken.count < free {
                let claimed = try await stream.claimIdle(
                    on: queue.stream, minIdle: configuration.recovery.claimMinIdle, count: free - taken.count,
                    cursor: &claimCursors[index])
                taken += claimed
                if !claimed.isEmpty {
                    metrics.claims.increment(by: claimed.count)
                    logger.notice("claimed entries idle on other consumers", metadata: ["llmq.count": "\(claimed.count)"])
                }
            }
        }
        if taken.isEmpty {
            try await readNew(free: free, into: &taken, scheduler: &scheduler, watch: &watch, waitWhenEmpty: waitWhenEmpty)
        }
    }

    /// Starts a task for each entry taken (unless it is running here already), each with one of
    /// `leases` (the pool slots taken for them), which it gives back when it ends.
    /// - Returns: The leases no entry took.
    @discardableResult
    func start(_ entries: [RequestStream.Delivery], leases: [SlotLease] = [], group: inout DiscardingTaskGroup) -> [SlotLease] {
        let claimedAt = ContinuousClock.now
        let claimedAtWall = Date().timeIntervalSince1970 * 1000
        var (entries, leases) = matchHomes(entries, leases: leases, now: Int64(claimedAtWall))
        for delivery in entries {
            let key = EntryKey(stream: delivery.stream, id: delivery.entry.id)
            let control = EntryControl()
            let isRunningHere = inFlight.withLockedValue { inFlight in
                // Deleted while this worker runs it, and taken out of the group by our own
                // XAUTOCLAIM: the running task answers it (see `publish`).
                if inFlight[key] != nil { return true }
                if delivery.removedFromGroup { return false }
                inFlight[key] = control
                return false
            }
            if isRunningHere { continue }
            if let user = delivery.user { fairUsers.withLockedValue { $0[key] = user } }
            let ticket = SlotTicket(leases.isEmpty ? nil : leases.removeFirst())
            slots.take()
            metrics.inFlight.record(slots.inUse)
            group.addTask {
                // The work runs in a task of its own so that a lost lease can cancel just this
                // request (``EntryControl``); shutdown's cancellation reaches it through here.
                let work = Task {
                    await self.handle(delivery, claimedAt: claimedAt, claimedAtWall: claimedAtWall, control: control, ticket: ticket)
                }
                control.onCancel { work.cancel() }
                await withTaskCancellationHandler {
                    await work.value
                } onCancel: {
                    work.cancel()
                }
                // Its actions hold the task and the chunk stream, which hold the control back.
                control.finish()
                if !delivery.removedFromGroup { self.inFlight.withLockedValue { _ = $0.removeValue(forKey: key) } }
                if let user = delivery.user { await self.endFairRequest(user: user, key: key) }
                // A request that never reached the lease's backend (refused, dead-lettered).
                if let lease = ticket.take() { await self.backend.releasePoolSlots([lease]) }
                self.slots.release()
                self.metrics.inFlight.record(self.slots.inUse)
            }
        }
        return Array(leases)
    }

    /// Orders a batch's leases so that each entry continuing a conversation gets a lease of its
    /// conversation's backend when the batch holds one (``ResilientBackend/home(for:)``), the
    /// others the rest in turn. Only a batch with leases of several backends is parsed here
    /// (each entry once: handling uses the result).
    /// - Returns: The entries, and the leases in the order they are handed out (extra ones last).
    private func matchHomes(
        _ entries: [RequestStream.Delivery], leases: [SlotLease], now: Int64
    ) -> (entries: [RequestStream.Delivery], leases: [SlotLease]) {
        guard leases.count > 1, Set(leases.map(\.backend)).count > 1 else { return (entries, leases) }
        var entries = entries
        var homes: [String?] = []
        for index in entries.indices {
            let parser = parsers[entries[index].stream] ?? parsers.values.first!
            let parsed = parser.parse(entries[index].entry, now: now)
            entries[index].parsed = parsed
            homes.append((try? parsed.get()).flatMap { backend.home(for: $0.chat) })
        }
        var spare = leases
        var assigned: [SlotLease?] = Array(repeating: nil, count: entries.count)
        for (index, home) in homes.enumerated() {
            guard let home, let match = spare.firstIndex(where: { $0.backend == home }) else { continue }
            assigned[index] = spare.remove(at: match)
        }
        for index in assigned.indices where assigned[index] == nil && !spare.isEmpty {
            assigned[index] = spare.removeFirst()
        }
        return (entries, assigned.compactMap { $0 } + spare)
    }

    /// Takes up to `free` new entries, the slots going by the scheduler's plan (minimum shares,
    /// then priority, then weight). Queues are read without waiting, round after round, until
    /// the slots are used or every queue came up short. When nothing at all was waiting, the
    /// worker watches every queue it serves (``RequestStream/waitForArrivals(after:block:)``)
    /// up to `readBlock`, and reads again as soon as anything arrives anywhere.
    func readNew(
        free: Int, into taken: inout [RequestStream.Delivery], scheduler: inout IntakeScheduler, watch: inout ArrivalWatch,
        waitWhenEmpty: Bool = true
    ) async throws(RedisError) {
        func deliveries(_ entries: [StreamEntry], from stream: String) -> [RequestStream.Delivery] {
            entries.map { RequestStream.Delivery(stream: stream, entry: $0, deliveries: 1, removedFromGroup: false) }
        }
        if queues.count == 1 && waitWhenEmpty && fairIntake == nil {
            // One queue: one blocking read, as before queues existed.
            let stream = queues[0].stream
            taken += deliveries(try await self.stream.readNew(from: [stream], count: free, block: configuration.readBlock)[stream] ?? [], from: stream)
            return
        }
        let before = taken.count
        var available = Set(queues.indices)
        while taken.count - before < free, !available.isEmpty {
            let plan = scheduler.plan(free: free - (taken.count - before), available: available)
            if plan.isEmpty { break }
            var started: [Int: Int] = [:]
            if let fairIntake {
                for (index, count) in plan.sorted(by: { $0.key < $1.key }) {
                    let take = try await stream.takeFair(from: queues[index].stream, count: count, intake: fairIntake)
                    watch.after[queues[index].stream] = take.lastDelivered
                    watch.heldBack = watch.heldBack || take.heldBack > 0
                    if take.deliveries.count < count { available.remove(index) }
                    started[index] = take.deliveries.count
                    taken += take.deliveries
                }
            } else {
                let read = try await stream.readAvailable(plan.sorted { $0.key < $1.key }.map { (queues[$0.key].stream, $0.value) })
                for (index, count) in plan {
                    let entries = read[queues[index].stream] ?? []
                    if entries.count < count { available.remove(index) }
                    started[index] = entries.count
                    taken += deliveries(entries, from: queues[index].stream)
                }
            }
            scheduler.recordStarts(started)
        }
        if taken.count == before && waitWhenEmpty {
            try await waitForNewEntries(watch)
        }
    }

    /// A fair request ended: its user has one fewer in flight in the pool. Should Redis not
    /// answer, the mark expires by itself (``FairIntake/markLifetime``).
    func endFairRequest(user: String, key: EntryKey) async {
        fairUsers.withLockedValue { _ = $0.removeValue(forKey: key) }
        do {
            try await stream.releaseFair([(user, key.id)], on: key.stream)
        } catch {
            logger.debug("could not end a fair request's running mark; it expires", metadata: ["llmq.error": "\(error)"])
        }
    }

    /// Nothing waiting anywhere: watch every queue for new entries (entries after the group's
    /// last delivered ID are new to the group, so none can slip by between the reads before
    /// and this wait) for up to `readBlock`. The next round takes them by the plan.
    ///
    /// A fair queue's take says where its new entries start (it read everything before); when
    /// entries wait only behind a user limit, the wait is short, since a limit may lift anywhere
    /// in the pool without a new entry.
    func waitForNewEntries(_ watch: ArrivalWatch = ArrivalWatch()) async throws(RedisError) {
        let unknown = queues.map(\.stream).filter { watch.after[$0] == nil }
        var last = unknown.isEmpty ? [:] : try await stream.lastDeliveredIDs(of: unknown)
        last.merge(watch.after) { $1 }
        let block = watch.heldBack ? min(configuration.readBlock, FairIntake.heldBackRetry) : configuration.readBlock
        _ = try await stream.waitForArrivals(after: last, block: block)
    }
}

/// Where an idle read loop's wait starts: what a round learned about its queues.
struct ArrivalWatch {
    /// By request stream, the entry after which arrivals are new (from a fair take).
    var after: [String: String] = [:]
    /// A fair take left entries waiting behind a user limit.
    var heldBack = false
}
