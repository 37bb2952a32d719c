import NIOConcurrencyHelpers

/// The fault chosen for one completion request.
enum InjectedFault: Equatable, Sendable {
    case failure
    case busy
    case rateLimit
    case hang(milliseconds: Int)
}

/// What the fault generator decided for one request.
struct FaultDecision: Sendable {
    var fault: InjectedFault?
    /// Only used when the response streams.
    var midStreamError: Bool
    /// Copied so one request sees one consistent fault set even if `/sim/faults` changes it meanwhile.
    var slowFactor: Double
}

/// The answer of a non-waiting attempt to take a slot.
enum SlotAdmission {
    case granted(SlotLease)
    case mustWait
    case rejected
}

/// A slot given to a request, and how many of its prompt tokens the prompt cache held.
struct SlotGrant: Sendable {
    var slot: Int
    var cachedTokens: Int
}

/// Thrown by `SimulatorState.waitForSlot()` when the queue filled up before this request got in.
struct QueueFullError: Error {}

/// Slots, the prompt cache, the FIFO queue in front of the slots, the counters and the current faults,
/// behind one lock.
///
/// Everything a test asserts (`/slots`, `/sim/stats`) is derived from this one state, updated under one lock,
/// so the numbers are always consistent with each other. The critical sections are a few field updates, so
/// one lock costs less than an actor hop on the zero-latency path.
final class SimulatorState: Sendable {
    private struct Waiter {
        var continuation: CheckedContinuation<SlotGrant, any Error>
        var taskID: Int
        var request: CacheRequest
    }

    private struct State {
        /// Free slot ids, in no particular order: `cache` decides which one a request gets.
        var freeSlots: [Int]
        var cache: PromptCache
        /// Task id occupying each slot, or -1.
        var slotTask: [Int]
        /// Waiters by ticket; a cancelled waiter is removed here and skipped in `order`.
        var waiters: [UInt64: Waiter] = [:]
        var order: [UInt64] = []
        var orderHead = 0
        var nextTicket: UInt64 = 0
        var stats = SimulatorStats()
        var faults: SimulatorFaults
        var failFirstRemaining: Int

        /// Takes the next live waiter off the queue.
        mutating func popWaiter() -> Waiter? {
            while orderHead < order.count {
                let ticket = order[orderHead]
                orderHead += 1
                if let waiter = waiters.removeValue(forKey: ticket) {
                    compactOrder()
                    return waiter
                }
            }
            compactOrder()
            return nil
        }

        /// Drops consumed tickets so `order` does not grow without bound.
        mutating func compactOrder() {
            if orderHead == order.count {
                order.removeAll(keepingCapacity: true)
                orderHead = 0
            } else if orderHead > 256 && orderHead * 2 > order.count {
                order.removeFirst(orderHead)
                orderHead = 0
            }
        }
    }

    let slotCount: Int
    let maxQueue: Int
    private let state: NIOLockedValueBox<State>

    init(slots: Int, maxQueue: Int, cacheEntries: Int, faults: SimulatorFaults) {
        self.slotCount = slots
        self.maxQueue = maxQueue
        self.state = NIOLockedValueBox(
            State(
                freeSlots: Array(0..<slots),
                cache: PromptCache(slots: slots, ramEntries: cacheEntries),
                slotTask: Array(repeating: -1, count: slots),
                faults: faults,
                failFirstRemaining: faults.failFirst
            )
        )
    }

    // MARK: Requests and faults

    /// Counts a completion request on arrival and returns its task id (0, 1, 2, ...).
    func recordRequest() -> Int {
        state.withLockedValue { state in
            let id = state.stats.requests
            state.stats.requests += 1
            return id
        }
    }

    func recordInvalid() { state.withLockedValue { $0.stats.invalid += 1 } }
    func recordCompleted() { state.withLockedValue { $0.stats.completed += 1 } }
    func recordCancelled() { state.withLockedValue { $0.stats.cancelled += 1 } }
    func recordFault() { state.withLockedValue { $0.stats.faults += 1 } }

    /// Decides the fault for request `taskID` and counts it. `failFirst` comes before the random draws.
    func decideFault(taskID: Int, streaming: Bool) -> FaultDecision {
        state.withLockedValue { state in
            let faults = state.faults
            var decision = FaultDecision(fault: nil, midStreamError: false, slowFactor: faults.slowFactor)
            if state.failFirstRemaining > 0 {
                state.failFirstRemaining -= 1
                decision.fault = .failure
            } else if faults.failureRate > 0 || faults.busyRate > 0 || faults.rateLimitRate > 0 || faults.hangRate > 0 {
                let draw = unitDraw(seed: faults.seed, index: UInt64(taskID), stream: 1)
                // Cumulative bounds: each rate takes its own slice of [0, 1).
                let failureBound = faults.failureRate
                let busyBound = failureBound + faults.busyRate
                let rateLimitBound = busyBound + faults.rateLimitRate
                let hangBound = rateLimitBound + faults.hangRate
                if draw < failureBound {
                    decision.fault = .failure
                } else if draw < busyBound {
                    decision.fault = .busy
                } else if draw < rateLimitBound {
                    decision.fault = .rateLimit
                } else if draw < hangBound {
                    decision.fault = .hang(milliseconds: faults.hangMilliseconds)
                }
            }
            if decision.fault == nil && streaming && faults.midStreamErrorRate > 0 {
                decision.midStreamError =
                    unitDraw(seed: faults.seed, index: UInt64(taskID), stream: 2) < faults.midStreamErrorRate
            }
            // A mid-stream error is counted when it is written: the request may yet be rejected or abandoned.
            if decision.fault != nil {
                state.stats.faults += 1
            }
            return decision
        }
    }

    var faults: SimulatorFaults {
        state.withLockedValue { $0.faults }
    }

    /// Replaces the faults and re-arms `failFirst`.
    func setFaults(_ faults: SimulatorFaults) {
        state.withLockedValue { state in
            state.faults = faults
            state.failFirstRemaining = faults.failFirst
        }
    }

    // MARK: Stats

    var stats: SimulatorStats {
        state.withLockedValue { state in
            var stats = state.stats
            stats.inFlight = slotCount - state.freeSlots.count
            stats.queued = state.waiters.count
            return stats
        }
    }

    /// Zeroes the counters and re-arms `failFirst`. Requests generating or waiting right now stay counted in
    /// `inFlight`, `queued`, `maxInFlight` and `maxQueued`, because they are still there.
    func resetStats() {
        state.withLockedValue { state in
            state.stats = SimulatorStats(maxInFlight: slotCount - state.freeSlots.count, maxQueued: state.waiters.count)
            state.failFirstRemaining = state.faults.failFirst
        }
    }

    /// The task id in each slot, -1 for an idle slot.
    var slotTasks: [Int] {
        state.withLockedValue { $0.slotTask }
    }

    // MARK: Slots

    /// Takes a free slot without waiting, or says whether the request may wait for one.
    func tryAcquire(taskID: Int, request: CacheRequest) -> SlotAdmission {
        let outcome = state.withLockedValue { state in
            Self.take(&state, taskID: taskID, request: request, slotCount: slotCount, maxQueue: maxQueue)
        }
        switch outcome {
        case .granted(let grant): return .granted(SlotLease(grant, state: self))
        case .mustWait: return .mustWait
        case .rejected: return .rejected
        }
    }

    /// Waits in FIFO order for a slot. Throws `CancellationError` if the task is cancelled while waiting
    /// (the waiter leaves the queue at once) and `QueueFullError` if the queue is full.
    func waitForSlot(taskID: Int, request: CacheRequest) async throws -> SlotLease {
        let ticket = state.withLockedValue { state in
            state.nextTicket &+= 1
            return state.nextTicket
        }
        let grant = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<SlotGrant, any Error>) in
                enum Outcome { case granted(SlotGrant), rejected, cancelled, queued }
                let outcome: Outcome = state.withLockedValue { state in
                    // A cancellation that ran before this point found no waiter to remove; seeing the flag under
                    // the lock closes that gap, because the flag is set before the handler runs.
                    if Task.isCancelled { return .cancelled }
                    switch Self.take(&state, taskID: taskID, request: request, slotCount: slotCount, maxQueue: maxQueue) {
                    case .granted(let grant): return .granted(grant)
                    case .rejected: return .rejected
                    case .mustWait: break
                    }
                    state.waiters[ticket] = Waiter(continuation: continuation, taskID: taskID, request: request)
                    state.order.append(ticket)
                    state.stats.maxQueued = max(state.stats.maxQueued, state.waiters.count)
                    return .queued
                }
                switch outcome {
                case .granted(let grant): continuation.resume(returning: grant)
                case .rejected: continuation.resume(throwing: QueueFullError())
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .queued: break
                }
            }
        } onCancel: {
            let waiter = state.withLockedValue { $0.waiters.removeValue(forKey: ticket) }
            waiter?.continuation.resume(throwing: CancellationError())
        }
        return SlotLease(grant, state: self)
    }

    /// Gives the slot to the longest waiting request, or frees it.
    fileprivate func release(slot: Int) {
        let next: (Waiter, SlotGrant)? = state.withLockedValue { state in
            if let waiter = state.popWaiter() {
                // The slot passes straight to the waiter, so `inFlight` does not change.
                state.slotTask[slot] = waiter.taskID
                return (waiter, Self.load(&state, waiter.request, into: slot))
            }
            state.slotTask[slot] = -1
            state.freeSlots.append(slot)
            return nil
        }
        if let next {
            next.0.continuation.resume(returning: next.1)
        }
    }

    /// What a request gets under the lock without waiting: a free slot, or a rejection (counted) when the
    /// queue is full, or leave to wait.
    private enum Take { case granted(SlotGrant), mustWait, rejected }

    private static func take(
        _ state: inout State,
        taskID: Int,
        request: CacheRequest,
        slotCount: Int,
        maxQueue: Int
    ) -> Take {
        if let slot = state.cache.choose(among: state.freeSlots, for: request),
            let index = state.freeSlots.firstIndex(of: slot)
        {
            state.freeSlots.remove(at: index)
            occupy(&state, slot: slot, taskID: taskID, slotCount: slotCount)
            return .granted(load(&state, request, into: slot))
        }
        if state.waiters.count >= maxQueue {
            state.stats.rejected += 1
            return .rejected
        }
        return .mustWait
    }

    /// Loads the request's prompt into the slot's cache and counts its prompt tokens, cached and all.
    private static func load(_ state: inout State, _ request: CacheRequest, into slot: Int) -> SlotGrant {
        let cached = state.cache.load(request, into: slot)
        state.stats.promptTokens += request.prompt.count
        state.stats.cachedPromptTokens += cached
        return SlotGrant(slot: slot, cachedTokens: cached)
    }

    private static func occupy(_ state: inout State, slot: Int, taskID: Int, slotCount: Int) {
        state.slotTask[slot] = taskID
        let inFlight = slotCount - state.freeSlots.count
        if inFlight > state.stats.maxInFlight {
            state.stats.maxInFlight = inFlight
        }
    }
}

/// One request's hold on a slot. Released exactly once: explicitly when generation ends, or when the lease is
/// dropped, so a response that is never written (client gone, write failed) cannot leak a slot.
final class SlotLease: Sendable {
    let slot: Int
    /// Prompt tokens the slot's cache (or the RAM cache) already held, which the prompt time skips.
    let cachedTokens: Int
    private let state: SimulatorState
    private let released = NIOLockedValueBox<Bool>(false)

    fileprivate init(_ grant: SlotGrant, state: SimulatorState) {
        self.slot = grant.slot
        self.cachedTokens = grant.cachedTokens
        self.state = state
    }

    func release() {
        if !released.withLockedValue({ was in defer { was = true }; return was }) {
            state.release(slot: slot)
        }
    }

    deinit {
        release()
    }
}

/// A uniform draw in [0, 1) from (seed, index, stream), so a request's fault depends only on its arrival number.
func unitDraw(seed: UInt64, index: UInt64, stream: UInt64) -> Double {
    var x = seed ^ (index &* 0x9E37_79B9_7F4A_7C15) ^ (stream &* 0xD1B5_4A32_D192_ED03)
    x = splitMix64(&x)
    return Double(x >> 11) * 0x1p-53
}

/// SplitMix64's output function; enough mixing for fault dice and ids.
func splitMix64(_ state: inout UInt64) -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
