import Foundation
import LLMQBackends
import LLMQContract
import LLMQRedis
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

extension Worker {
    /// Replies and acknowledges, retrying with backoff while Redis is unreachable or answers a
    /// transient error (out of memory, loading, a failover: ``RedisError/isTransient``), which
    /// never changes where the reply goes. Gives up only when the task is cancelled; the entry
    /// then stays pending and is answered after a claim.
    ///
    /// After a lost connection an attempt may have written without our hearing of it; the
    /// retry learns that from the group (an entry neither pending nor marked lost was
    /// acknowledged, and only its reply acknowledges it: ``RequestStream/ReplyResult/replied``)
    /// rather than writing a second reply. An entry answered as lost is proven by its marker,
    /// which lives a day: past half of that, such a retry stops rather than risk a second reply.
    /// - Returns: Whether the reply is written by this worker (false when the entry was no
    ///   longer ours).
    func publish(
        _ reply: Reply, for entryID: String, on requests: String, to replyStream: String, deadLetter: RedisCommand?,
        lastChunk: RequestStream.LastChunk?, mode: RequestStream.ReplyMode, logger: Logger
    ) async -> Bool {
        var mode = mode
        var lastChunk = lastChunk
        var failures = 0
        // When an attempt first ended with the connection, so without our knowing what it did.
        var ambiguousSince: ContinuousClock.Instant?
        var replyStream = replyStream
        var reply = reply
        while true {
            if let since = ambiguousSince, mode == .lost, ContinuousClock.now - since > RequestStream.lostMarkerLifetime / 2 {
                logger.error("could not learn whether the reply was written before Redis went away; not writing it again")
                return false
            }
            do {
                switch try await stream.reply(
                    to: entryID, on: requests, stream: replyStream, fields: reply.fields, status: reply.status,
                    errorCode: reply.errorCode, backend: reply.backend, deadLetter: deadLetter, lastChunk: lastChunk, mode: mode)
                {
                case .written:
                    logger.debug("replied")
                    if failures > 0 { health.redisSucceeded(groupReady: true) }
                    return true
                case .replied where ambiguousSince != nil:
                    // Our own earlier attempt wrote it; its answer was lost with the connection.
                    logger.debug("replied (the answer to an earlier attempt was lost with its connection)")
                    health.redisSucceeded(groupReady: true)
                    return true
                case .goneFromGroup where mode == .owned:
                    // Deleted from the stream while we ran it, and an XAUTOCLAIM (ours or another
                    // worker's) took it out of the group, unanswered: answer it as a lost entry.
                    // Its marker lets only the first answer through.
                    mode = .lost
                    continue
                case .notOurs, .goneFromGroup, .replied:
                    logger.warning("entry no longer ours (claimed by another consumer, or answered); reply dropped")
                }
                return false
            } catch where !error.isTransient && error.code == .server && lastChunk != nil {
                // Not something waiting helps with, e.g. the chunk stream in another cluster
                // slot: the reply goes without its last chunk and says why.
                logger.error("could not write the reply with its last chunk; writing it without", metadata: ["llmq.error": "\(error)"])
                reply.add("stream_error", "could not write the last chunk to \(lastChunk?.stream ?? ""): \(error.message)")
                lastChunk = nil
            } catch where !error.isTransient && error.code == .server && replyStream != configuration.streams.replies {
                // The producer's reply_to cannot take the reply for a reason the script does not
                // handle itself (another cluster slot): answer on the default stream and say why.
                logger.error("could not write the reply to reply_to; writing it to the default reply stream", metadata: ["llmq.error": "\(error)"])
                reply.add("reply_error", "could not write to reply_to \(replyStream): \(error.message)")
                replyStream = configuration.streams.replies
            } catch {
                failures += 1
                metrics.replyRetries.increment()
                if error.code == .connection {
                    health.redisFailed(error.description)
                    ambiguousSince = ambiguousSince ?? .now
                }
                if Task.isCancelled || (failures > 3 && stopping && error.code == .shutdown) { return false }
                if error.isAuthenticationFailure {
                    // The read loop sees the same refusal and stops the worker; the entry stays
                    // pending for a worker that can write.
                    logger.error("Redis refused the credentials; reply not written, the entry stays pending")
                    return false
                }
                let wait = Backoff.redisReply.delay(afterFailures: failures)
                if error.isTransient {
                    logger.warning("could not publish reply; retrying", metadata: ["llmq.error": "\(error)"])
                } else {
                    logger.error("could not publish reply (not a transient error); retrying", metadata: ["llmq.error": "\(error)"])
                }
                do {
                    try await Task.sleep(for: wait)
                } catch {
                    return false
                }
            }
        }
    }
}
