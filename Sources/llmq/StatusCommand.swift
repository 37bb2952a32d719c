import ArgumentParser
import Foundation
import LLMQClient
import LLMQConfiguration
import LLMQRedis
import LLMQWorker
import NIOConcurrencyHelpers

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the stream, the group's lag and pending entries, and each consumer.",
        discussion: """
            With --watch, refreshes every --interval seconds until Ctrl-C (or --count frames): \
            trends since the previous frame, replies per second by status and error code (from the \
            stats hash workers keep), dead letters since the watch started, the oldest pending entry \
            and each consumer. Plain text: on a terminal each frame replaces the last; piped, frames \
            follow one another separated by a blank line. With --json, one JSON object per line per frame.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Print JSON (with --watch: one object per line per frame).")
    var json = false

    @Option(help: "Only this queue (a configured queue, or <streams.requests>:NAME); --watch needs it when several are configured.")
    var queue: String?

    @Flag(help: "Refresh until Ctrl-C, like top.")
    var watch = false

    @Option(help: "Seconds between frames with --watch.")
    var interval: Double = 1

    @Option(help: "Stop after this many frames (with --watch).")
    var count: Int?

    func validate() throws {
        guard interval.isFinite, interval >= 0.05, interval <= 86_400 else {
            throw ValidationError("--interval must be between 0.05 and 86400 seconds, got \(interval)")
        }
        if let count, count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
        if !watch, count != nil { throw ValidationError("--count needs --watch") }
    }

    func run() async throws {
        ignoreBrokenPipes()
        let configuration = try connection.load()
        let queues = queue.map { [configuration.queue(named: $0)] } ?? configuration.effectiveQueues
        let client = RedisClient(configuration: configuration.redis, name: "llmq-status")
        defer { client.shutdown() }
        func streams(of queue: WorkerConfiguration.Queue) -> WorkerConfiguration.Streams {
            // In cluster mode a queue in another slot has reply, dead and stats keys of its own.
            configuration.streams.serving(queue.stream)
        }
        if watch {
            guard queues.count == 1 else {
                throw fail("\(queues.count) queues are configured (\(queues.map(\.name).joined(separator: ", "))): pick one with --queue NAME", code: 2)
            }
            await watchUntilStopped(
                client: client, streams: streams(of: queues[0]), backends: configuration.slots.pool ? configuration.backendNames : [],
                fairUsers: configuration.users.fair)
            return
        }
        do {
            var statuses: [QueueStatus] = []
            let backends = configuration.slots.pool ? configuration.backendNames : []
            for queue in queues {
                statuses.append(try await QueueStatus.read(
                    from: client, streams: streams(of: queue), backends: backends, fairUsers: configuration.users.fair))
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                // One queue: the object, as always; several: an array of them, in priority order.
                let data = statuses.count == 1 ? try encoder.encode(statuses[0]) : try encoder.encode(statuses)
                print(String(decoding: data, as: UTF8.self))
            } else if statuses.count == 1 {
                print(statuses[0].text)
            } else {
                print(zip(queues, statuses).map { queue, status in
                    "queue \(queue.name) (priority \(queue.priority), weight \(queue.weight)\(queue.minimumShare > 0 ? ", minimum share \(queue.minimumShare)" : "")):\n" + status.text
                }.joined(separator: "\n\n"))
            }
        } catch let error as RedisError {
            throw fail("\(error)")
        }
    }

    /// Runs the watch loop until it has printed `count` frames or SIGINT/SIGTERM arrives; either
    /// way the command ends with status 0.
    private func watchUntilStopped(client: RedisClient, streams: WorkerConfiguration.Streams, backends: [String], fairUsers: Bool) async {
        let loop = Task { await watchLoop(client: client, streams: streams, backends: backends, fairUsers: fairUsers) }
        let stop = StopOnSignal(signals: [SIGINT, SIGTERM]) { loop.cancel() }
        defer { stop.cancel() }
        await loop.value
    }

    private func watchLoop(client: RedisClient, streams: WorkerConfiguration.Streams, backends: [String], fairUsers: Bool) async {
        let terminal = isatty(STDOUT_FILENO) == 1
        let period = Duration.milliseconds(Int64((interval * 1000).rounded()))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let clockFormat = DateFormatter()
        clockFormat.dateFormat = "yyyy-MM-dd HH:mm:ss"
        var watch = StatusWatch()
        var lastReading: ContinuousClock.Instant?
        var frames = 0
        var next = ContinuousClock.now
        while !Task.isCancelled {
            var out = ""
            do {
                let status = try await QueueStatus.read(from: client, streams: streams, backends: backends, fairUsers: fairUsers)
                // The time between readings, not between frames: rates are counts over that time.
                let now = ContinuousClock.now
                let elapsed = lastReading.map { now - $0 } ?? .zero
                lastReading = now
                if json {
                    out = String(decoding: try encoder.encode(status), as: UTF8.self) + "\n"
                } else {
                    watch.width = terminal ? terminalWidth() : nil
                    var title = header(clock: clockFormat, terminal: terminal)
                    if let width = watch.width, title.count > width { title = String(title.prefix(width)) }
                    out = title + "\n" + watch.frame(for: status, elapsed: elapsed) + "\n"
                }
            } catch {
                // Redis may be restarting: say so and keep watching (the client reconnects).
                let message = "llmq: \(error) (trying again in \(formatSeconds(interval))s)\n"
                if json {
                    FileHandle.standardError.write(Data(message.utf8))
                } else {
                    out = header(clock: clockFormat, terminal: terminal) + "\n" + message
                }
            }
            if !out.isEmpty {
                if terminal {
                    out = "\u{1B}[H\u{1B}[2J" + out
                } else if frames > 0, !json {
                    out = "\n" + out
                }
                // FileHandle writes are unbuffered: a frame reaches a pipe or log when it is drawn.
                FileHandle.standardOutput.write(Data(out.utf8))
            }
            frames += 1
            if let count, frames >= count { return }
            next += period
            let now = ContinuousClock.now
            if next < now { next = now + period }  // after a slow read, no burst of catch-up frames
            do {
                try await Task.sleep(until: next, clock: .continuous)
            } catch {
                return  // cancelled: Ctrl-C
            }
        }
    }

    private func header(clock: DateFormatter, terminal: Bool) -> String {
        "llmq status  \(clock.string(from: Date()))  every \(formatSeconds(interval))s" + (terminal ? "  (Ctrl-C to quit)" : "")
    }

    private func formatSeconds(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }

    /// Columns of the terminal on stdout: the kernel's idea first, then `COLUMNS`, then 80.
    private func terminalWidth() -> Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        if let columns = ProcessInfo.processInfo.environment["COLUMNS"].flatMap({ Int($0) }), columns > 0 { return columns }
        return 80
    }
}

/// Calls `stop` on the first SIGINT or SIGTERM; ends the process at once (status 130 or 143) on
/// the second, in case the first could not end a read that waits on a silent Redis.
final class StopOnSignal: @unchecked Sendable {
    // @unchecked: `sources` is set in init and only read by `cancel()`; the handlers share
    // nothing but the atomic flag.
    private var sources: [any DispatchSourceSignal] = []
    private let signalled = NIOLockedValueBox<Bool>(false)

    init(signals: [Int32], stop: @escaping @Sendable () -> Void) {
        sources = signals.map { number in
            // A signal source sees the signal only if its default action (ending the process) is off.
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in
                if signalled.withLockedValue({ was in defer { was = true }; return was }) { _exit(128 + number) }
                stop()
            }
            source.resume()
            return source
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
    }
}
