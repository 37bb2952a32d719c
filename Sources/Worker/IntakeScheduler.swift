
/// Decides which queues the free slots go to: a state machine with no I/O (the worker reads
/// what it plans, then reports what it got).
///
/// For each slot, in order:
/// 1. a queue with a `minimumShare` whose share of recent starts is below it (the one furthest
///    below), so that a low queue never starves when it is given a share;
/// 2. otherwise the highest priority among the queues that may still have work, strictly;
/// 3. among queues of that priority, the one furthest behind its `weight` (recent starts
///    divided by weight), which gives starts in the ratio of the weights.
///
/// "Recent starts" decay: each start multiplies every queue's count by `1 - 1/64` before
/// adding 1, a window of about the last 64 starts, so shares follow the current load rather
/// than all history. A queue that returned fewer entries than planned has no more work for
/// now and is left out of the rest of the round.
struct IntakeScheduler {
    struct Queue: Sendable, Hashable {
        var priority: Int
        var weight: Int
        var minimumShare: Double
    }

    let queues: [Queue]
    private(set) var recentStarts: [Double]
    private static let decay = 1.0 - 1.0 / 64

    init(queues: [Queue]) {
        self.queues = queues
        self.recentStarts = Array(repeating: 0, count: queues.count)
    }

    /// How many of `free` slots to offer each queue this round (by index; zero counts left out).
    /// - Parameter available: The queues that may still have work.
    func plan(free: Int, available: Set<Int>) -> [Int: Int] {
        var starts = recentStarts
        var plan: [Int: Int] = [:]
        for _ in 0..<max(0, free) {
            guard let next = Self.pick(queues: queues, starts: starts, available: available) else { break }
            Self.record(next, in: &starts)
            plan[next, default: 0] += 1
        }
        return plan
    }

    /// Records what started, queue by queue, as the plan ordered them.
    mutating func recordStarts(_ counts: [Int: Int]) {
        // Interleave by the plan's own rule so the decay treats queues alike.
        var remaining = counts
        while let next = Self.pick(queues: queues, starts: recentStarts, available: Set(remaining.filter { $0.value > 0 }.keys)) {
            Self.record(next, in: &recentStarts)
            remaining[next, default: 0] -= 1
        }
    }

    private static func record(_ index: Int, in starts: inout [Double]) {
        for queue in starts.indices { starts[queue] *= decay }
        starts[index] += 1
    }

    private static func pick(queues: [Queue], starts: [Double], available: Set<Int>) -> Int? {
        guard !available.isEmpty else { return nil }
        let total = starts.reduce(0, +)
        let candidates = available.sorted()
        // 1. A minimum share not met.
        let short = candidates.compactMap { index -> (index: Int, deficit: Double)? in
            let share = total > 0 ? starts[index] / total : 0
            let deficit = queues[index].minimumShare - share
            return queues[index].minimumShare > 0 && deficit > 0 ? (index, deficit) : nil
        }
        if let neediest = short.max(by: { $0.deficit < $1.deficit }) { return neediest.index }
        // 2. Strict priority; 3. weights within it.
        let top = candidates.map { queues[$0].priority }.max()!
        return candidates.filter { queues[$0].priority == top }.min { left, right in
            starts[left] / Double(max(1, queues[left].weight)) < starts[right] / Double(max(1, queues[right].weight))
        }
    }
}
