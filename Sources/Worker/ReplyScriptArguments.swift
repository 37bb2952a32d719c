import LLMQConfiguration
import LLMQRedis

/// What the reply script (`Scripts/reply.lua`) is run with: its KEYS and ARGV, by name.
///
/// This is the one ordered list both sides follow: ``keys`` and ``arguments`` put the fields in
/// the order below, and the script's first lines read them in that order into locals of the
/// same names. Add a field here and there together.
struct ReplyScriptArguments {
    // KEYS, in order.

    /// KEYS[1]: the request stream.
    var requests: String
    /// KEYS[2]: where the reply goes (`reply_to`, or the queue's default reply stream).
    var replyStream: String
    /// KEYS[3]: the dead-letter stream.
    var deadLetters: String
    /// KEYS[4]: the history stream answered requests are kept in (`streams.keepAnswered`).
    var history: String
    /// KEYS[5]: the entry's lost-entry marker (``RequestStream/lostMarker(_:_:)``).
    var lostMarker: String
    /// KEYS[6]: the stats hash.
    var stats: String
    /// KEYS[7]: the queue's default reply stream, where a reply goes when `reply_to` is no stream.
    var defaultReplies: String
    // KEYS[8], with a streamed answer only: ``lastChunk``'s chunk stream.

    // ARGV, in order.

    /// ARGV[1]
    var group: String
    /// ARGV[2]
    var entryID: String
    /// ARGV[3]
    var consumer: String
    /// ARGV[4]: `owned` or `lost`.
    var mode: RequestStream.ReplyMode
    /// ARGV[5]: `MAXLEN ~` of the reply stream; 0 none.
    var replyMaxLength: Int
    /// ARGV[6]: `MAXLEN ~` of the dead-letter stream; 0 none.
    var deadLetterMaxLength: Int
    /// ARGV[7]: `keep` (copy the request to the history stream) or `delete`.
    var keepAnswered: Bool
    /// ARGV[8]: `MAXLEN ~` of the history stream; 0 none.
    var historyMaxLength: Int
    /// ARGV[9]: the oldest history ID to keep (`XTRIM MINID`), or "" for no trim by age.
    var historyMinimumID: String
    /// ARGV[10]: `ok` or `error`, counted in the stats hash.
    var status: String
    /// ARGV[11]: the error code counted in the stats hash, or "".
    var errorCode: String
    /// ARGV[12]: the backend that answered, counted in the stats hash, or "".
    var backend: String
    // ARGV[13] and ARGV[14]: how many ARGV the dead-letter record and the last chunk take.
    // ARGV[15] and ARGV[16]: ``lastChunk``'s expiry ms and `MAXLEN ~` (0 without one).
    /// ARGV[17]: how long the marker of a lost entry's reply lives, ms.
    var markerLifetime: Duration
    /// ARGV[18...]: the dead-letter record's field names and values, if any; then
    var deadLetter: RedisCommand?
    /// the last chunk's fields, if any; then
    var lastChunk: RequestStream.LastChunk?
    /// the reply's fields, to the end.
    var reply: [(String, String)]

    /// KEYS, in the order above.
    var keys: [String] {
        var keys = [requests, replyStream, deadLetters, history, lostMarker, stats, defaultReplies]
        if let lastChunk { keys.append(lastChunk.stream) }
        return keys
    }

    /// ARGV, in the order above.
    var arguments: RedisCommand {
        var chunk = RedisCommand()
        chunk.append(fields: lastChunk?.fields ?? [])
        var arguments = RedisCommand(
            group, entryID, consumer, mode.rawValue, String(replyMaxLength), String(deadLetterMaxLength),
            keepAnswered ? "keep" : "delete", String(historyMaxLength), historyMinimumID, status, errorCode, backend,
            String(deadLetter?.argumentCount ?? 0), String(chunk.argumentCount),
            String(lastChunk?.expire.milliseconds ?? 0), String(lastChunk?.maxLength ?? 0),
            String(markerLifetime.milliseconds))
        if let deadLetter { arguments.append(contentsOf: deadLetter) }
        arguments.append(contentsOf: chunk)
        arguments.append(fields: reply)
        return arguments
    }
}
