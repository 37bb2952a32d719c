import LLMQContract

/// The view of `llmq status --watch`: one plain-text frame per reading of ``QueueStatus``,
/// with each number's trend since the previous reading and reply rates over the interval.
///
/// Rendering is a pure function of two readings (``frame(previous:current:elapsed:deadLettersSinceStart:width:)``);
/// this struct only carries what must outlive one frame: the previous reading and the dead
/// letters counted since the watch started.
public struct StatusWatch: Sendable {
    /// The reading the next frame is compared with.
    public private(set) var previous: QueueStatus?
    /// Dead letters (`error:dead_letter`) counted since the first reading, across counter resets.
    public private(set) var deadLettersSinceStart = 0
    /// Lines are cut to this many characters (the terminal's width); nil leaves them whole.
    public var width: Int?

    /// Most consumers a frame lists; the rest are summed up in one line.
    public static let consumerRows = 20
    /// Most error codes the rates line shows.
    public static let errorCodes = 5

    public init(width: Int? = nil) {
        self.width = width
    }

    /// Takes a new reading and returns its frame.
    /// - Parameters:
    ///   - current: The new reading.
    ///   - elapsed: Time since the previous reading on a monotonic clock (unused for the first).
    public mutating func frame(for current: QueueStatus, elapsed: Duration) -> String {
        if let previous {
            switch Self.change(from: previous.replyCounts, to: current.replyCounts) {
            case .counted(let difference): deadLettersSinceStart += difference.errorsByCode["dead_letter"] ?? 0
            // Whatever the hash holds now was counted after it was reset, so after the watch began.
            case .reset: deadLettersSinceStart += current.replyCounts.errorsByCode["dead_letter"] ?? 0
            }
        }
        let text = Self.frame(
            previous: previous, current: current, elapsed: elapsed, deadLettersSinceStart: deadLettersSinceStart, width: width)
        previous = current
        return text
    }

    /// How the reply totals changed between two readings.
    public enum CountsChange: Sendable, Hashable {
        /// No total went down: how much each went up (codes that did not move are left out).
        case counted(QueueStatus.ReplyCounts)
        /// A total went down: the hash was deleted or reset in between, so a difference would
        /// mean nothing (and a negative rate would be a lie).
        case reset
    }

    /// Compares two readings of the totals. A code that disappears went down to zero: a reset.
    public static func change(from old: QueueStatus.ReplyCounts, to new: QueueStatus.ReplyCounts) -> CountsChange {
        guard new.ok >= old.ok, new.error >= old.error else { return .reset }
        var byCode: [String: Int] = [:]
        for (code, count) in old.errorsByCode where (new.errorsByCode[code] ?? 0) < count { return .reset }
        for (code, count) in new.errorsByCode {
            let difference = count - (old.errorsByCode[code] ?? 0)
            if difference > 0 { byCode[code] = difference }
        }
        return .counted(.init(ok: new.ok - old.ok, error: new.error - old.error, errorsByCode: byCode))
    }

    /// Renders one frame.
    /// - Parameters:
    ///   - previous: The reading before, for trends and rates; nil for the first frame.
    ///   - current: The reading to show.
    ///   - elapsed: Time between the two readings on a monotonic clock.
    ///   - deadLettersSinceStart: Dead letters counted since the watch started.
    ///   - width: Lines are cut to this many characters; nil leaves them whole.
    public static func frame(
        previous: QueueStatus?, current: QueueStatus, elapsed: Duration, deadLettersSinceStart: Int, width: Int?
    ) -> String {
        var lines: [String] = []
        lines.append("stream \(current.stream)  group \(current.group)")

        let length = "length \(current.length)\(trend(current.length, previous?.length))"
        if current.groupExists {
            let lag = current.lag.map { "lag \($0)\(trend($0, previous?.lag))" } ?? "lag ~\(current.lagOrEstimate) (estimated)"
            // A group that appeared since the last frame has no pending trend yet.
            let pendingBefore = previous?.groupExists == true ? previous?.pending : nil
            lines.append("\(length)  \(lag)  pending \(current.pending)\(trend(current.pending, pendingBefore))")
        } else {
            lines.append("\(length)  group not created yet (a worker creates it when it starts)")
        }

        lines += rateLines(previous: previous, current: current, elapsed: elapsed)
        lines.append("dead letters since start \(deadLettersSinceStart)")

        if current.groupExists {
            if let oldest = current.oldestPending {
                // The ID last: on a narrow terminal the age and who holds it are what must stay visible.
                lines.append("oldest pending age \(duration(oldest.ageMilliseconds))  consumer \(oldest.consumer)  deliveries \(oldest.deliveries)  idle \(duration(oldest.idleMilliseconds))  id \(oldest.id)")
            } else {
                lines.append("oldest pending none")
            }
            lines += consumerLines(current.consumers)
        }
        if let held = current.poolSlotsHeld {
            lines.append("pool slots held  " + held.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: "  "))
        }
        if let users = current.topUsers, !users.isEmpty {
            lines.append("busiest users  " + users.map { "\($0.user.isEmpty ? "(none)" : $0.user) \($0.inFlight)+\($0.waiting)" }.joined(separator: "  ")
                + "  (in flight+waiting)")
        }

        lines.append("replies \(current.replies) \(current.repliesLength)\(trend(current.repliesLength, previous?.repliesLength))  dead \(current.dead) \(current.deadLength)\(trend(current.deadLength, previous?.deadLength))")
        if let width, width > 0 {
            lines = lines.map { $0.count > width ? String($0.prefix(width)) : $0 }
        }
        return lines.joined(separator: "\n")
    }

    /// Replies per second by status, then the busiest error codes.
    private static func rateLines(previous: QueueStatus?, current: QueueStatus, elapsed: Duration) -> [String] {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        guard let previous, seconds > 0 else {
            return ["replies/s  measuring (rates from the next frame)  totals ok \(current.replyCounts.ok)  error \(current.replyCounts.error)"]
        }
        guard case .counted(let difference) = change(from: previous.replyCounts, to: current.replyCounts) else {
            return ["replies/s  counters reset (\(current.stats) went down); rates from the next frame"]
        }
        let over = formatDecimal(seconds, places: 1)
        var lines = ["replies/s  ok \(rate(difference.ok, seconds))  error \(rate(difference.error, seconds))  (over \(over)s)"]
        // Sorted by count, then by code, so equal rates keep their places from frame to frame.
        let busiest = difference.errorsByCode.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        if busiest.isEmpty {
            lines.append("errors/s   none")
        } else {
            var line = "errors/s   " + busiest.prefix(errorCodes).map { "\($0.key) \(rate($0.value, seconds))" }.joined(separator: "  ")
            if busiest.count > errorCodes { line += "  and \(busiest.count - errorCodes) more codes" }
            lines.append(line)
        }
        return lines
    }

    /// The consumers by name, at most ``consumerRows`` of them.
    private static func consumerLines(_ consumers: [QueueStatus.Consumer]) -> [String] {
        guard !consumers.isEmpty else { return ["consumers 0"] }
        let sorted = consumers.sorted { $0.name < $1.name }
        let shown = sorted.prefix(consumerRows)
        let nameWidth = max(8, shown.map(\.name.count).max() ?? 8)
        var lines = ["consumers \(consumers.count)"]
        lines.append("  " + pad("name", nameWidth) + "  " + padLeft("pending", 7) + "  idle")
        for consumer in shown {
            lines.append("  " + pad(consumer.name, nameWidth) + "  " + padLeft(String(consumer.pending), 7) + "  " + duration(consumer.idleMilliseconds))
        }
        if sorted.count > shown.count { lines.append("  and \(sorted.count - shown.count) more") }
        return lines
    }

    /// ` (+35)`, ` (-3)`, ` (=)`, or nothing without an earlier value.
    static func trend(_ current: Int, _ previous: Int?) -> String {
        guard let previous else { return "" }
        if current == previous { return " (=)" }
        // Both are counts Redis reported, far from overflow, but a subtraction of wire values is checked.
        let (difference, overflow) = current.subtractingReportingOverflow(previous)
        if overflow { return "" }
        return difference > 0 ? " (+\(difference))" : " (\(difference))"
    }

    private static func rate(_ count: Int, _ seconds: Double) -> String {
        formatDecimal(Double(count) / seconds, places: 1)
    }

    /// `850ms`, `12.3s`, `4m05s`, `2h03m`: short enough for a column, exact enough to act on.
    static func duration(_ milliseconds: Int) -> String {
        let milliseconds = max(0, milliseconds)
        if milliseconds < 1000 { return "\(milliseconds)ms" }
        if milliseconds < 60_000 { return formatDecimal(Double(milliseconds) / 1000, places: 1) + "s" }
        let seconds = milliseconds / 1000
        if seconds < 3600 { return "\(seconds / 60)m" + twoDigits(seconds % 60) + "s" }
        return "\(seconds / 3600)h" + twoDigits(seconds / 60 % 60) + "m"
    }

    private static func twoDigits(_ value: Int) -> String {
        value < 10 ? "0\(value)" : String(value)
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    private static func padLeft(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}
