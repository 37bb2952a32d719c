import LLMQBackends
import LLMQRedis
import Synchronization

/// The chunk stream of one streamed request: text is written as the backend generates it, in
/// as few `XADD`s as ``WorkerConfiguration/Streaming`` allows.
///
/// Entries, in order (every one carries the request's `id`):
/// - text: `seq`, `delta`;
/// - `reset`: `seq` 0, `reset` 1, `attempt`, `delivery`, `reason`: the text before it belongs to
///   an answer that broke off (a retry, a fallback, or another consumer taking the request
///   over); the next answer follows with `seq` 1, 2, ...;
/// - the last one, `done` 1, written by the reply script with the reply itself (see
///   ``doneChunk(for:)``).
///
/// The first text of an answer is written at once, for the time to first token; later text
/// waits up to `flushInterval`, or until `flushTokens` pieces wait. One task per request
/// (``run()``) does the writing, so entries go out in order and the backend's reading never
/// waits for Redis.
final class AnswerStream: CompletionStreamSink {
    let key: String
    private let id: String
    private let delivery: Int
    private let writer: RedisClient
    private let settings: WorkerConfiguration.Streaming
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    private struct State {
        /// The call whose text is being streamed (0 before the first).
        var attempt = 0
        var backend = ""
        /// The next entry's `seq`.
        var seq = 0
        /// Entries built but not yet known to be written (kept across a lost connection), and
        /// how many of those commands are entries (the rest renew the expiry).
        var unwritten: [RedisCommand] = []
        var unwrittenEntries = 0
        /// Entries written so far.
        var written = 0
        /// Resets to write before more text.
        var resets: [(attempt: Int, reason: String)] = []
        /// Text received and not yet in an entry, and in how many pieces.
        var text = ""
        var pieces = 0
        /// Whether text of the current answer has gone into an entry: a new answer then needs a reset.
        var textWritten = false
        var lastWrite: ContinuousClock.Instant?
        var lastExpire: ContinuousClock.Instant?
        /// Why writing stopped (the key is not a stream, say); the reply says so.
        var failure: String?
    }

    private let state = Mutex(State())

    /// - Parameter delivery: How often the request was delivered: after the first, another
    ///   consumer may have streamed part of an answer, so the stream starts with a reset.
    init(key: String, id: String, delivery: Int, writer: RedisClient, settings: WorkerConfiguration.Streaming) {
        self.key = key
        self.id = id
        self.delivery = delivery
        self.writer = writer
        self.settings = settings
        (wakes, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        if delivery > 1 {
            state.withLock { $0.resets.append((1, "delivered again (delivery \(delivery)): an earlier consumer stopped before it finished")) }
            wake.yield()
        }
    }

    // MARK: - CompletionStreamSink

    func attemptStarted(_ attempt: Int, backend: String) {
        let wakeNow = state.withLock { state in
            defer {
                state.attempt = attempt
                state.backend = backend
            }
            state.text = ""
            state.pieces = 0
            guard state.textWritten else { return false }
            state.textWritten = false
            state.resets.append((attempt, "attempt \(state.attempt) on \(state.backend) broke off; attempt \(attempt) on \(backend) starts again"))
            return true
        }
        if wakeNow { wake.yield() }
    }

    func received(_ text: String) {
        state.withLock { state in
            state.text += text
            state.pieces += 1
        }
        wake.yield()
    }

    // MARK: - Writing

    /// Writes until cancelled; then ``finish()`` writes what is left.
    func run() async {
        var iterator = wakes.makeAsyncIterator()
        while await iterator.next() != nil {
            while !Task.isCancelled {
                let due = nextWrite(at: .now, force: false)
                switch due {
                case .nothing:
                    break
                case .at(let instant):
                    do {
                        try await Task.sleep(until: instant, clock: .continuous)
                    } catch {
                        return
                    }
                    continue
                case .now(let commands):
                    if await !write(commands) {
                        // Redis is unreachable: try again a little later, the entries kept.
                        try? await Task.sleep(for: max(settings.flushInterval, .milliseconds(100)))
                    }
                    continue
                }
                break
            }
            if Task.isCancelled { return }
        }
    }

    /// Writes what is left (call after ``run()`` has ended) and returns the `seq` and attempt
    /// of the last chunk, the entries written, and why writing failed, if it did.
    func finish() async -> (seq: Int, attempt: Int, written: Int, failure: String?) {
        for _ in 0..<3 {
            guard case .now(let commands) = nextWrite(at: .now, force: true) else { break }
            if await !write(commands) { break }
        }
        return state.withLock { ($0.seq, max($0.attempt, 1), $0.written, $0.failure) }
    }

    private enum Due {
        case nothing
        case at(ContinuousClock.Instant)
        case now([RedisCommand])
    }

    /// What to write next: resets and text due now, or when text will be due.
    private func nextWrite(at now: ContinuousClock.Instant, force: Bool) -> Due {
        state.withLock { state in
            guard state.failure == nil else { return .nothing }
            if !state.unwritten.isEmpty { return .now(state.unwritten) }
            let hasText = !state.text.isEmpty
            if state.resets.isEmpty {
                guard hasText else { return .nothing }
                if !force, state.pieces < settings.flushTokens, let last = state.lastWrite, now - last < settings.flushInterval {
                    return .at(last + settings.flushInterval)
                }
            }
            var commands: [RedisCommand] = []
            let entries = state.resets.count + (hasText ? 1 : 0)
            for reset in state.resets {
                state.seq = 0
                commands.append(add([
                    ("id", id), ("seq", "0"), ("reset", "1"), ("attempt", String(reset.attempt)),
                    ("delivery", String(delivery)), ("reason", reset.reason),
                ]))
                state.seq = 1
            }
            state.resets.removeAll()
            if hasText {
                commands.append(add([("id", id), ("seq", String(state.seq)), ("delta", state.text)]))
                state.seq += 1
                state.text = ""
                state.pieces = 0
                state.textWritten = true
            }
            // The expiry is renewed with the first write and every quarter of its time after.
            if state.lastExpire.map({ now - $0 > settings.expire / 4 }) ?? true {
                commands.append(RedisCommand("PEXPIRE", key, String(settings.expire.milliseconds)))
                state.lastExpire = now
            }
            state.lastWrite = now
            state.unwritten = commands
            state.unwrittenEntries = entries
            return .now(commands)
        }
    }

    private func add(_ fields: [(String, String)]) -> RedisCommand {
        var command = RedisCommand("XADD", key)
        if settings.maxLength > 0 { command.append(contentsOf: RedisCommand("MAXLEN", "~", String(settings.maxLength))) }
        command.append("*")
        for (name, value) in fields {
            command.append(name)
            command.append(value)
        }
        return command
    }

    /// Sends the entries in one round trip; false when Redis could not be reached (they stay
    /// to be sent again: a consumer may then see a `seq` twice). An error reply (the key holds
    /// something else) stops the streaming for good.
    private func write(_ commands: [RedisCommand]) async -> Bool {
        do {
            let replies = try await writer.pipeline(commands)
            state.withLock { state in
                state.unwritten = []
                state.written += state.unwrittenEntries
                if let message = replies.lazy.compactMap(\.errorMessage).first {
                    state.failure = "could not write to stream \(key): \(message)"
                }
            }
            return true
        } catch {
            return false
        }
    }

    /// The last chunk's fields, from the reply: status, and the finish reason and usage, or
    /// the error.
    func doneChunk(for reply: Reply, seq: Int, attempt: Int) -> [(String, String)] {
        var fields: [(String, String)] = [
            ("id", id), ("seq", String(seq)), ("done", "1"), ("attempt", String(attempt)), ("delivery", String(delivery)),
        ]
        let copied: Set<String> = [
            "status", "finish_reason", "error_code", "error", "model", "backend", "prompt_tokens", "completion_tokens",
            "prompt_ms", "first_token_ms", "generation_ms", "tokens_per_second",
        ]
        fields += reply.fields.filter { copied.contains($0.0) }
        return fields
    }
}
