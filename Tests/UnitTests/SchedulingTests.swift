@testable import LLMQBackends
@testable import LLMQWorker
import Testing

/// The pure parts of scheduling: which backend member takes a call, which queues get the free
/// slots, and how long to back off. No process, no socket, no clock.
@Suite("Scheduling: member selection, queue plans, backoff")
struct SchedulingTests {
    private func selection(_ members: [(weight: Double?, slots: Int?, models: Set<String>?)]) -> MemberSelection {
        MemberSelection(profiles: members.map { .init(models: $0.models, weight: $0.weight) }, slots: members.map(\.slots))
    }

    /// Picks and starts `count` calls, never finishing any; returns how many each member got.
    private func starts(_ selection: inout MemberSelection, _ count: Int, finishing: Bool = true) -> [Int] {
        var counts = Array(repeating: 0, count: selection.profiles.count)
        for _ in 0..<count {
            guard case .member(let index) = selection.pick(model: nil, isAvailable: { _ in true }) else { break }
            selection.start(index)
            counts[index] += 1
            if finishing { selection.finish(index) }
        }
        return counts
    }

    @Test("Weights 9 and 1 split starts 90/10; with no weights, traffic follows the slot counts")
    func weights() {
        // Starts decay (a window of about 64), so the split is the ratio to within a start or so
        // per window.
        var weighted = selection([(9, nil, nil), (1, nil, nil)])
        let split = starts(&weighted, 1000)
        #expect((885...915).contains(split[0]) && split[0] + split[1] == 1000, "\(split)")
        var bySlots = selection([(nil, 8, nil), (nil, 4, nil)])
        let bySlotSplit = starts(&bySlots, 1200)
        #expect((785...815).contains(bySlotSplit[0]) && bySlotSplit[0] + bySlotSplit[1] == 1200, "\(bySlotSplit)")
    }

    @Test("Slots are never exceeded: with every slot held, the pick is .full until one is finished")
    func slotsHold() {
        var pool = selection([(nil, 2, nil), (nil, 1, nil)])
        #expect(starts(&pool, 10, finishing: false) == [2, 1])
        #expect(pool.pick(model: nil, isAvailable: { _ in true }) == .full)
        #expect(pool.freeSlots(isAvailable: { _ in true }) == .count(0))
        pool.finish(1)
        #expect(pool.pick(model: nil, isAvailable: { _ in true }) == .member(1))
        #expect(pool.freeSlots(isAvailable: { _ in true }) == .count(1))
    }

    @Test("Models route: a member serving other models is never picked; none serving it is .unavailable")
    func models() {
        let pool = selection([(nil, nil, ["a"]), (nil, nil, ["b"]), (nil, nil, nil)])
        #expect(pool.pick(model: "b", excluding: [2], isAvailable: { _ in true }) == .member(1))
        #expect(pool.pick(model: "c", isAvailable: { _ in true }) == .member(2))
        #expect(pool.pick(model: "c", excluding: [2], isAvailable: { _ in true }) == .unavailable)
    }

    @Test("Open breakers and zero weights leave a member out; free slots count only the members that take requests")
    func availability() {
        let pool = selection([(0, 4, nil), (nil, 2, nil), (nil, nil, nil)])
        #expect(pool.pick(model: nil, isAvailable: { $0 == 0 }) == .unavailable, "weight 0 takes nothing")
        #expect(pool.pick(model: nil, isAvailable: { $0 == 1 }) == .member(1))
        #expect(pool.freeSlots(isAvailable: { $0 == 1 }) == .count(2))
        #expect(pool.freeSlots(isAvailable: { _ in true }) == .unlimited, "a member without a slot limit")
        #expect(pool.freeSlots(isAvailable: { _ in false }) == MemberSelection.FreeSlots.none)
    }

    @Test("The member whose pool slot a request holds is taken while it serves the model and has a slot; the pool's candidates carry slots, weights and starts")
    func preferredAndPoolCandidates() {
        var pool = selection([(3, 2, nil), (1, 1, ["b"]), (nil, nil, nil)])
        #expect(pool.pick(model: nil, preferred: 1, isAvailable: { _ in true }) == .member(1), "against the weights")
        #expect(pool.pick(model: "a", preferred: 1, isAvailable: { _ in true }) == .member(0), "it does not serve a")
        pool.start(1)
        #expect(pool.pick(model: nil, preferred: 1, isAvailable: { $0 != 2 }) == .member(0), "its slot is held")
        #expect(pool.poolCandidates(names: ["a", "b", "c"], isAvailable: { _ in true }) == nil, "c has no slot limit")
        let candidates = pool.poolCandidates(names: ["a", "b", "c"], isAvailable: { $0 != 2 })
        #expect(candidates?.map(\.backend) == ["a", "b"] && candidates?.map(\.slots) == [2, 1] && candidates?.map(\.weight) == [3, 1])
        #expect(candidates?[1].starts == 1 && candidates?[0].starts == 0)
        #expect(pool.poolCandidates(names: ["a", "b", "c"], isAvailable: { _ in false }) == [], "none takes requests")
    }

    @Test("Ties go to the member with fewer calls in flight")
    func ties() {
        var pool = selection([(1, nil, nil), (1, nil, nil)])
        pool.start(0)
        pool.finish(0)
        pool.start(1)
        // Equal weights, and member 0's one start has decayed once more than member 1's.
        #expect(pool.pick(model: nil, isAvailable: { _ in true }) == .member(0))
    }

    @Test("A queue plan: strict priority, weights within a priority, and a minimum share against starvation")
    func queuePlans() {
        var scheduler = IntakeScheduler(queues: [
            .init(priority: 1, weight: 1, minimumShare: 0), .init(priority: 0, weight: 3, minimumShare: 0),
            .init(priority: 0, weight: 1, minimumShare: 0),
        ])
        #expect(scheduler.plan(free: 4, available: [0, 1, 2]) == [0: 4], "the high queue first, while it may have work")
        var low: [Int: Int] = [:]
        for _ in 0..<100 {
            let plan = scheduler.plan(free: 4, available: [1, 2])
            scheduler.recordStarts(plan)
            low.merge(plan, uniquingKeysWith: +)
        }
        #expect((290...310).contains(low[1] ?? 0) && (low[1] ?? 0) + (low[2] ?? 0) == 400, "weights 3 and 1: \(low)")

        var shared = IntakeScheduler(queues: [.init(priority: 1, weight: 1, minimumShare: 0), .init(priority: 0, weight: 1, minimumShare: 0.2)])
        var got: [Int: Int] = [:]
        for _ in 0..<100 {
            let plan = shared.plan(free: 5, available: [0, 1])
            shared.recordStarts(plan)
            got.merge(plan, uniquingKeysWith: +)
        }
        #expect((got[1] ?? 0) >= 95 && (got[1] ?? 0) <= 105, "the low queue keeps its 20% share: \(got)")
    }

    @Test("Backoff doubles from the first step to the maximum, each wait a half to all of its step")
    func backoff() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
        #expect(backoff.step(afterFailures: 0) == .milliseconds(100))
        #expect(backoff.step(afterFailures: 1) == .milliseconds(100))
        #expect(backoff.step(afterFailures: 3) == .milliseconds(400))
        #expect(backoff.step(afterFailures: 7) == .seconds(5))
        #expect(backoff.step(afterFailures: .max) == .seconds(5), "no overflow")
        for failures in 1...10 {
            let delay = backoff.delay(afterFailures: failures)
            #expect(delay >= backoff.step(afterFailures: failures) * 0.5 && delay <= backoff.step(afterFailures: failures))
        }
        let retry = ResilientBackend.RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(200), maxBackoff: .seconds(5))
        #expect(retry.backoff(afterAttempt: 1, retryAfter: .seconds(2)) == .seconds(2), "Retry-After wins when longer")
        #expect(retry.backoff(afterAttempt: 1, retryAfter: .seconds(60)) == .seconds(5), "but never past the maximum")
    }
}
