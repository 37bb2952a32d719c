import Foundation
import LLMQConfiguration
import LLMQRedis
import Metrics

/// Replying: the reply script's modes and results, its lost-entry markers, and `WAIT` after
/// each reply for `redis.waitReplicas`.
extension RequestStream {
    /// What the reply script did.
    enum ReplyResult {
        /// The reply (and any record) is written, the entry acknowledged.
        case written
        /// Another consumer owns the entry now, or it was acknowledged, or (lost mode) it was
        /// answered already.
        case notOurs
        /// The entry is neither pending nor in the stream, and no reply to it was written: it
        /// was deleted and an `XAUTOCLAIM` took it out of the group.
        case goneFromGroup
        /// A reply to the entry exists already (its marker says so): written by this worker's
        /// own earlier attempt, whose answer was lost with its connection, or by the consumer
        /// that took the entry over.
        case replied
    }

    /// How the reply script may write a reply.
    enum ReplyMode: String {
        /// Only while this consumer owns the entry in the group's pending list; acknowledges it.
        case owned
        /// For an entry that `XAUTOCLAIM` removed from the pending list because it was deleted:
        /// no owner to check; the reply marker lets only the first answer through.
        case lost
    }

    /// The `done` entry of a streamed answer, written with its reply.
    struct LastChunk {
        var stream: String
        var fields: [(String, String)]
        /// The chunk stream's expiry, renewed.
        var expire: Duration
        /// `MAXLEN ~` of the chunk stream; 0 none.
        var maxLength: Int
    }

    /// Publishes the reply (and a dead-letter record, and a streamed answer's last chunk) and acknowledges the request in one
    /// atomic step, only if this consumer still owns the entry; then deletes the request entry
    /// (with `streams.keepAnswered`, after copying it to the history stream).
    /// - Parameter deadLetter: Field names and values of the dead-letter record, if any.
    /// - Returns: What happened; nothing was written unless ``ReplyResult/written``.
    /// - Parameters:
    ///   - status: `ok` or `error`, counted in the stats hash with `errorCode`.
    func reply(
        to entryID: String, on requests: String, stream replyStream: String, fields: [(String, String)],
        status: String, errorCode: String, backend: String = "",
        deadLetter: RedisCommand? = nil, lastChunk: LastChunk? = nil, mode: ReplyMode = .owned
    ) async throws(RedisError) -> ReplyResult {
        // The queue's own keys (in cluster mode, in its slot); the default reply stream too.
        let own = streams.serving(requests)
        let arguments = ReplyScriptArguments(
            requests: requests, replyStream: replyStream == streams.replies ? own.replies : replyStream,
            deadLetters: own.dead, history: own.answered, lostMarker: lostMarker(requests, entryID), stats: own.stats,
            defaultReplies: own.replies, group: streams.group, entryID: entryID, consumer: consumer, mode: mode,
            replyMaxLength: streams.replyMaxLength, deadLetterMaxLength: streams.deadMaxLength,
            keepAnswered: streams.keepAnswered, historyMaxLength: streams.answeredMaxLength,
            historyMinimumID: answeredMinimumID(), status: status, errorCode: errorCode, backend: backend,
            markerLifetime: Self.lostMarkerLifetime, deadLetter: deadLetter, lastChunk: lastChunk, reply: fields)
        let result = try ReplyResult(decoding: try await Scripts.reply.run(on: writer, keys: arguments.keys, arguments: arguments.arguments))
        if result == .written { await waitForReplicas(of: requests) }
        return result
    }

    /// The marker of an entry that left the group without a reply: set to `lost` by the claim
    /// script when `XAUTOCLAIM` drops an entry deleted from the stream while pending, and to
    /// `replied` by the reply that answers it. An entry that is neither pending nor marked has
    /// been acknowledged, and only a reply acknowledges: that is the proof a retried reply reads
    /// (``ReplyResult/replied``), at no cost to the entries that never leave the group otherwise.
    func lostMarker(_ requests: String, _ entryID: String) -> String {
        requests + ":lost:" + entryID
    }

    /// How long a lost-entry marker lives.
    static let lostMarkerLifetime: Duration = .seconds(86400)

    /// With `redis.waitReplicas`, waits until that many replicas have the writes made so far on
    /// the connection to the master of `requests` (`WAIT`). The reply stands either way: a
    /// replica that is late or missing is counted (`llmq_reply_replication_short_total`), not
    /// waited for again.
    ///
    /// `WAIT` holds the connection it is sent on, and every reply's commands share it, so one
    /// `WAIT` at a time serves all the replies written before it (``ReplicationWaits``). While a
    /// master has too few replicas (one died, or was promoted in a failover), each `WAIT` would
    /// still hold it for the whole timeout: after a short answer the queue's replies do not wait
    /// for ``shortWaitPause``; then one tries again.
    func waitForReplicas(of requests: String) async {
        guard waitReplicas > 0 else { return }
        let short = Counter(label: "llmq_reply_replication_short_total")
        if let until = waitPausedUntil.withLockedValue({ $0[requests] }), ContinuousClock.now < until {
            short.increment()
            return
        }
        let enough = await replicationWaits.afterReply(on: requests) {
            let acknowledged = try? await writer.send(
                RedisCommand("WAIT", String(waitReplicas), String(max(1, waitTimeout.milliseconds))), onNodeOf: requests)
            return (acknowledged?.int ?? 0) >= waitReplicas
        }
        if !enough {
            short.increment()
            waitPausedUntil.withLockedValue { $0[requests] = ContinuousClock.now + Self.shortWaitPause }
        }
    }

    /// How long replies skip `WAIT` after one found too few replicas.
    static let shortWaitPause: Duration = .seconds(5)

    /// With `keepAnswered` and a maximum age: the oldest history ID to keep (`XTRIM MINID`).
    private func answeredMinimumID() -> String {
        guard streams.keepAnswered, streams.answeredMaxAgeSeconds > 0 else { return "" }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return String(max(0, now - Int64(streams.answeredMaxAgeSeconds) * 1000)) + "-0"
    }
}
