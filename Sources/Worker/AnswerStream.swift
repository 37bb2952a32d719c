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
/// waits up to `flushInterval`, or until `flushTokens` pieces wait. One write is in flight at a
/// time, so entries go out in order; text that arrives meanwhile goes in the next. Writes due at
/// once are sent from where the text arrives and the next is chained from the Redis client's
/// thread, with no task switch; only a write that must wait (coalescing, or Redis unreachable)
/// is left to ``run()``, and the backend's reading never waits for Redis.
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
        /// Whether a write is in flight.
        var writing = false
        /// No write before this (Redis was unreachable).
        var retryAt: ContinuousClock.Instant?
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
        /// ``finish()`` waiting for the write in flight.
        var idleWaiter: CheckedContinuation<Void, Never>?
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
            proceed()
        }
    }

    // MARK: - CompletionStreamSink

    func attemptStarted(_ attempt: Int, backend: String) {
        let reset = state.withLock { state in
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
        if reset { proceed() }
    }

    func received(_ text: String) {
        state.withLock { state in
            state.text += text
            state.pieces += 1
        }
        proceed()
    }

    // MARK: - Writing

    /// Starts the write that is due now, if none is in flight; a write due later is left to
    /// ``run()``.
    private func proceed() {
        switch nextWrite(at: .now, force: false) {
        case .now(let commands): send(commands)
        case .at: wake.yield()
        case .nothing: break
        }
    }

    private func send(_ commands: [RedisCommand]) {
        writer.enqueue(commands) { [self] result in
            let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
                state.writing = false
                switch result {
                case .success(let replies):
                    state.unwritten = []
                    state.written += state.unwrittenEntries
                    if let message = replies.lazy.compactMap(\.errorMessage).first {
                        state.failure = "could not write to stream \(key): \(message)"
                    }
                case .failure:
                    // Redis is unreachable: try again a little later, the entries kept.
                    state.retryAt = .now + max(settings.flushInterval, .milliseconds(100))
                }
                defer { state.idleWaiter = nil }
                return state.idleWaiter
            }
            if let waiter {
                waiter.resume()
            } else {
                proceed()
            }
        }
    }

    /// Waits out the writes that are due later, until cancelled; then ``finish()`` writes what
    /// is left.
    func run() async {
        var iterator = wakes.makeAsyncIterator()
        while await iterator.next() != nil {
            while case .at(let instant) = nextWrite(at: .now, force: false, start: false) {
                do {
                    try await Task.sleep(until: instant, clock: .continuous)
                } catch {
                    return
                }
                proceed()
            }
        }
    }

    /// Waits for the write in flight, writes what is left (call after ``run()`` has ended), and
    /// returns the `seq` and attempt of the last chunk, the entries written, and why writing
    /// failed, if it did.
    func finish() async -> (seq: Int, attempt: Int, written: Int, failure: String?) {
        for _ in 0..<3 {
            await withCheckedContinuation { continuation in
                let idle = state.withLock { state in
                    if !state.writing { return true }
                    state.idleWaiter = continuation
                    return false
                }
                if idle { continuation.resume() }
            }
            guard case .now(let commands) = nextWrite(at: .now, force: true) else { break }
            await withCheckedContinuation { continuation in
                state.withLock { $0.idleWaiter = continuation }
                send(commands)
            }
        }
        return state.withLock { ($0.seq, max($0.attempt, 1), $0.written, $0.failure) }
    }

    private enum Due {
        case nothing
        case at(ContinuousClock.Instant)
        case now([RedisCommand])
    }

    /// What to write next: resets and text due now (taking the write, unless `start` is
    /// false), or when text will be due; nothing while a write is in flight (its end goes on).
    private func nextWrite(at now: ContinuousClock.Instant, force: Bool, start: Bool = true) -> Due {
        state.withLock { state in
            guard state.failure == nil, !state.writing else { return .nothing }
            if !force, let retryAt = state.retryAt, now < retryAt { return .at(retryAt) }
            let hasText = !state.text.isEmpty
            if state.unwritten.isEmpty && state.resets.isEmpty {
                guard hasText else { return .nothing }
                if !force, state.pieces < settings.flushTokens, let last = state.lastWrite, now - last < settings.flushInterval {
                    return .at(last + settings.flushInterval)
                }
            }
            guard start else { return .at(now) }
            state.writing = true
            state.retryAt = nil
            if !state.unwritten.isEmpty { return .now(state.unwritten) }
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
