import LLMQBackends
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import NIOConcurrencyHelpers

/// The chunk stream of one streamed request: text is written as the backend generates it, in
/// as few writes as ``WorkerConfiguration/Streaming`` allows.
///
/// Entries, in order (every one carries the request's `id` and the `delivery` that wrote it):
/// - text: `seq`, `delta`;
/// - `reset`: `seq` 0, `reset` 1, `attempt`, `reason`: the text before it belongs to an answer
///   that broke off (a retry, a fallback, or another consumer taking the request over); the
///   next answer follows with `seq` 1, 2, ...;
/// - the last one, `done` 1, written by the reply script with the reply itself (see
///   ``doneChunk(for:seq:attempt:)``).
///
/// Every write goes through ``Scripts/chunks``, which writes only while this consumer owns the
/// entry: once another consumer has claimed it, this writer is fenced off (``isFenced``), stops
/// for good and tells its owner (`onFenced`), so its late text can never follow the heir's
/// reset. A write whose answer was lost with the connection is sent again, so a reader may see
/// a text chunk twice; its `seq` tells (see the README's reader rule).
///
/// The first text of an answer is written at once, for the time to first token; later text
/// waits up to `flushInterval`, or until `flushTokens` pieces wait. One write is in flight at a
/// time, so entries go out in order; text that arrives meanwhile goes in the next. Writes due at
/// once are sent from where the text arrives and the next is chained from the Redis client's
/// thread, with no task switch; only a write that must wait (coalescing, or Redis unreachable or
/// out of memory) is left to ``run()``, and the backend's reading never waits for Redis.
final class AnswerStream: CompletionStreamSink {
    /// Who may write: the entry and the consumer that owns it.
    struct Owner: Sendable {
        var requests: String
        var group: String
        var entryID: String
        var consumer: String
        /// The entry's lost-entry marker (``RequestStream/lostMarker(_:_:)``).
        var marker: String
    }

    let key: String
    private let id: String
    private let delivery: Int
    private let owner: Owner
    private let writer: RedisClient
    private let settings: WorkerConfiguration.Streaming
    private let onFenced: @Sendable () -> Void
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    /// One write: chunks and whether it renews the expiry.
    private struct Batch {
        var chunks: [[(String, String)]]
        var renewExpiry: Bool
        /// Send it as `EVAL` (the server answered `NOSCRIPT`).
        var useEval = false
    }

    private struct State {
        /// The call whose text is being streamed (0 before the first).
        var attempt = 0
        var backend = ""
        /// The next entry's `seq`.
        var seq = 0
        /// The batch built but not yet known to be written (kept across a lost connection).
        var unwritten: Batch?
        /// Whether a write is in flight.
        var writing = false
        /// No write before this (Redis was unreachable or refused for a while), and how many
        /// writes in a row failed so.
        var retryAt: ContinuousClock.Instant?
        var failures = 0
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
        /// Another consumer owns the entry now, or it was answered: nothing more is written.
        var fenced = false
        /// ``finish()`` waiting for the write in flight.
        var idleWaiter: CheckedContinuation<Void, Never>?

        /// After a failed write: the next try waits 100 ms, doubling up to 1 s.
        mutating func retryLater() {
            failures += 1
            retryAt = .now + .milliseconds(100) * (1 << min(failures - 1, 3))
        }
    }

    private let state = NIOLockedValueBox(State())

    /// - Parameters:
    ///   - delivery: How often the request was delivered: after the first, another consumer
    ///     may have streamed part of an answer, so the stream starts with a reset.
    ///   - onFenced: Called once, on whatever thread learns it, when a write finds that this
    ///     consumer no longer owns the entry.
    init(
        key: String, id: String, delivery: Int, owner: Owner, writer: RedisClient, settings: WorkerConfiguration.Streaming,
        onFenced: @escaping @Sendable () -> Void = {}
    ) {
        self.key = key
        self.id = id
        self.delivery = delivery
        self.owner = owner
        self.writer = writer
        self.settings = settings
        self.onFenced = onFenced
        (wakes, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        if delivery > 1 {
            state.withLockedValue { $0.resets.append((1, "delivered again (delivery \(delivery)): an earlier consumer stopped before it finished")) }
            proceed()
        }
    }

    /// Whether this writer was fenced off (another consumer owns the entry, or it was answered).
    var isFenced: Bool { state.withLockedValue { $0.fenced } }

    /// Stops writing for good: the entry is no longer this consumer's (its lease refresh found
    /// it claimed by another). Text received later is dropped.
    func fence() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.fenced = true
            state.unwritten = nil
            state.text = ""
            state.resets.removeAll()
            if state.writing { return nil }
            defer { state.idleWaiter = nil }
            return state.idleWaiter
        }
        waiter?.resume()
        wake.yield()
    }

    // MARK: - CompletionStreamSink

    func attemptStarted(_ attempt: Int, backend: String) {
        let reset = state.withLockedValue { state in
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
        state.withLockedValue { state in
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

    private func send(_ batch: Batch) {
        var arguments = RedisCommand(
            owner.group, owner.entryID, owner.consumer, String(settings.maxLength),
            batch.renewExpiry ? String(settings.expire.milliseconds) : "0")
        for chunk in batch.chunks {
            arguments.append(String(chunk.count * 2))
            arguments.append(fields: chunk)
        }
        let keys = [owner.requests, key, owner.marker]
        let command =
            batch.useEval
            ? Scripts.chunks.evalCommand(keys: keys, arguments: arguments) : Scripts.chunks.command(keys: keys, arguments: arguments)
        writer.enqueue([command]) { [self] result in
            let (waiter, fenced): (CheckedContinuation<Void, Never>?, Bool) = state.withLockedValue { state in
                state.writing = false
                var newlyFenced = false
                switch result {
                case .success(let replies):
                    switch replies.first {
                    case .integer(let count) where count >= 0:
                        state.unwritten = nil
                        state.failures = 0
                        state.written += count
                    case .integer:
                        newlyFenced = !state.fenced
                        state.fenced = true
                        state.unwritten = nil
                    case .error(let message) where message.hasPrefix("NOSCRIPT"):
                        state.unwritten?.useEval = true
                    case .error(let message) where RedisError.isTransient(serverError: message):
                        // Out of memory, loading, a failover: the same write later, the entries kept.
                        state.retryLater()
                    case .error(let message):
                        state.failure = "could not write to stream \(key): \(message)"
                    default:
                        state.failure = "could not write to stream \(key): unexpected reply \(String(describing: replies.first))"
                    }
                case .failure:
                    // Redis is unreachable: try again a little later, the entries kept.
                    state.retryLater()
                }
                defer { state.idleWaiter = nil }
                return (state.idleWaiter, newlyFenced)
            }
            if fenced { onFenced() }
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
        // A write may be started by the end of another (chained from the Redis thread) at any
        // moment until everything is written: wait until none is in flight and nothing is left,
        // so that the last chunk, written with the reply, comes after every text chunk. While
        // Redis is unreachable or refusing (out of memory), the reply could not be written
        // either: keep trying, as it will, until cancelled.
        while true {
            await withCheckedContinuation { continuation in
                let idle = state.withLockedValue { state in
                    if !state.writing { return true }
                    state.idleWaiter = continuation
                    return false
                }
                if idle { continuation.resume() }
            }
            if let retryAt = state.withLockedValue({ $0.retryAt }), retryAt > .now {
                do {
                    try await Task.sleep(until: retryAt, clock: .continuous)
                } catch {
                    break
                }
            }
            switch nextWrite(at: .now, force: true) {
            case .now(let batch):
                await withCheckedContinuation { continuation in
                    state.withLockedValue { $0.idleWaiter = continuation }
                    send(batch)
                }
            case .nothing where state.withLockedValue({ $0.writing }):
                continue
            case .nothing, .at:
                return state.withLockedValue { ($0.seq, max($0.attempt, 1), $0.written, $0.failure) }
            }
        }
        return state.withLockedValue { ($0.seq, max($0.attempt, 1), $0.written, $0.failure) }
    }

    private enum Due {
        case nothing
        case at(ContinuousClock.Instant)
        case now(Batch)
    }

    /// What to write next: resets and text due now (taking the write, unless `start` is
    /// false), or when text will be due; nothing while a write is in flight (its end goes on),
    /// after a permanent failure, or once fenced off.
    private func nextWrite(at now: ContinuousClock.Instant, force: Bool, start: Bool = true) -> Due {
        state.withLockedValue { state in
            guard state.failure == nil, !state.fenced, !state.writing else { return .nothing }
            if !force, let retryAt = state.retryAt, now < retryAt { return .at(retryAt) }
            let hasText = !state.text.isEmpty
            if state.unwritten == nil && state.resets.isEmpty {
                guard hasText else { return .nothing }
                if !force, state.pieces < settings.flushTokens, let last = state.lastWrite, now - last < settings.flushInterval {
                    return .at(last + settings.flushInterval)
                }
            }
            guard start else { return .at(now) }
            state.writing = true
            state.retryAt = nil
            if let unwritten = state.unwritten { return .now(unwritten) }
            var chunks: [[(String, String)]] = []
            let delivery = String(self.delivery)
            for reset in state.resets {
                chunks.append([
                    ("id", id), ("seq", "0"), ("reset", "1"), ("attempt", String(reset.attempt)),
                    ("delivery", delivery), ("reason", reset.reason),
                ])
                state.seq = 1
            }
            state.resets.removeAll()
            if hasText {
                chunks.append([("id", id), ("seq", String(state.seq)), ("delivery", delivery), ("delta", state.text)])
                state.seq += 1
                state.text = ""
                state.pieces = 0
                state.textWritten = true
            }
            // The expiry is renewed with the first write and every quarter of its time after.
            var renew = false
            if state.lastExpire.map({ now - $0 > settings.expire / 4 }) ?? true {
                renew = true
                state.lastExpire = now
            }
            state.lastWrite = now
            let batch = Batch(chunks: chunks, renewExpiry: renew)
            state.unwritten = batch
            return .now(batch)
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
