import LLMQRedis
import NIOConcurrencyHelpers

/// Shares `WAIT` between the replies of one request stream: one `WAIT` at a time, and it covers
/// every reply written before it was sent (`WAIT` counts the writes made on its connection so
/// far, and every reply of a master goes through one connection).
///
/// A reply waits for the `WAIT` in flight only if that one was sent before the reply was
/// written; otherwise for the next, which it or another waiting reply sends. So under load one
/// `WAIT` serves many replies instead of each reply holding the connection for its own.
final class ReplicationWaits: Sendable {
    private enum Turn {
        /// A `WAIT` that covers this reply returned: whether enough replicas had it.
        case done(Bool)
        /// No `WAIT` is in flight and this reply is not covered: it sends the next.
        case send
    }

    private struct Stream {
        /// Replies written so far; a reply's number is its place in this count.
        var written = 0
        /// Replies that a returned `WAIT` covered.
        var covered = 0
        var result = true
        var isWaiting = false
        var waiters: [(number: Int, continuation: CheckedContinuation<Turn, Never>)] = []
    }

    private let streams = NIOLockedValueBox<[String: Stream]>([:])

    /// Waits, after a reply on `requests` was written, until a `WAIT` sent after it returns.
    /// - Parameter wait: Sends one `WAIT` and says whether enough replicas acknowledged.
    /// - Returns: Whether enough replicas acknowledged.
    func afterReply(on requests: String, wait: () async -> Bool) async -> Bool {
        let number = streams.withLockedValue { streams in
            streams[requests, default: Stream()].written += 1
            return streams[requests]!.written
        }
        while true {
            let turn: Turn = await withCheckedContinuation { continuation in
                streams.withLockedValue { streams in
                    var stream = streams[requests]!
                    if stream.covered >= number {
                        continuation.resume(returning: .done(stream.result))
                    } else if !stream.isWaiting {
                        stream.isWaiting = true
                        continuation.resume(returning: .send)
                    } else {
                        stream.waiters.append((number, continuation))
                    }
                    streams[requests] = stream
                }
            }
            switch turn {
            case .done(let result):
                return result
            case .send:
                let target = streams.withLockedValue { $0[requests]!.written }
                let result = await wait()
                streams.withLockedValue { streams in
                    var stream = streams[requests]!
                    stream.covered = max(stream.covered, target)
                    stream.result = result
                    stream.isWaiting = false
                    // Covered replies are done; of the others, the first sends the next WAIT.
                    var next = false
                    stream.waiters.removeAll { waiter in
                        if waiter.number <= target {
                            waiter.continuation.resume(returning: .done(result))
                            return true
                        }
                        if !next {
                            next = true
                            stream.isWaiting = true
                            waiter.continuation.resume(returning: .send)
                            return true
                        }
                        return false
                    }
                    streams[requests] = stream
                }
                if target >= number { return result }
            }
        }
    }
}
