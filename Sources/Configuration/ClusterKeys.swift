import LLMQRedis

/// Which keys a queue's reply script touches, and whether they can live in one cluster slot.
///
/// The reply script writes the reply, dead-letter, history and stats keys and acknowledges the
/// request in one atomic step, and a Lua script may only touch keys of one slot in Redis
/// Cluster. So in cluster mode the keys of each queue must share its request stream's slot.
/// Queues may live on different masters: a queue whose stream's hash tag differs from the reply
/// stream's gets the same key names with its own tag (`{q2}:requests` is answered on
/// `{q2}:replies`, counted in `{q2}:stats`).
extension WorkerConfiguration.Streams {
    /// These streams as the queue on `requestStream` uses them: `requests` set to it; in cluster
    /// mode, the reply, dead-letter, history and stats keys and the `reply_to` prefix moved to
    /// its hash tag when its tag
    /// differs from theirs (keys without a tag stay as they are, and ``clusterProblem(queueKey:)``
    /// refuses them).
    public func serving(_ requestStream: String) -> Self {
        var streams = self
        streams.requests = requestStream
        guard cluster, let tag = HashSlot.tag(of: requestStream) else { return streams }
        func retagged(_ key: String) -> String {
            guard let own = HashSlot.tag(of: key), own != tag, let open = key.firstIndex(of: "{") else { return key }
            let close = key[open...].firstIndex(of: "}")!
            return String(key[..<open]) + "{" + tag + "}" + String(key[key.index(after: close)...])
        }
        streams.replies = retagged(replies)
        streams.dead = retagged(dead)
        streams.answered = retagged(answered)
        streams.stats = retagged(stats)
        streams.replyToPrefix = retagged(replyToPrefix)
        return streams
    }

    /// Why these streams (one queue's, from ``serving(_:)``) cannot work in a Redis Cluster, in
    /// one line, with the configuration key to blame (nil: the queue's request stream); nil
    /// when they can.
    public func clusterProblem() -> (key: String?, problem: String)? {
        guard HashSlot.tag(of: requests) != nil else {
            return (nil, "in cluster mode a request stream needs a hash tag, e.g. {llmq}:requests (\(requests) has none), so that its reply, dead-letter and stats keys can share its slot")
        }
        let slot = HashSlot.of(requests)
        let keys = [("streams.replies", replies), ("streams.dead", dead), ("streams.stats", stats)]
            + (keepAnswered ? [("streams.answered", answered)] : [])
        if let (name, key) = keys.first(where: { HashSlot.of($0.1) != slot }) {
            return (name, "in cluster mode a queue's keys must share one slot: \(requests) is in slot \(slot), but \(name) \(key) in slot \(HashSlot.of(key)); give them one hash tag, e.g. {llmq}:requests and {llmq}:replies")
        }
        return nil
    }

    /// Why a request on `requests` may not name `replyTo` as its reply stream in cluster mode
    /// (the reply script could not write it: Redis would answer `CROSSSLOT`); nil when it may,
    /// and always nil outside cluster mode.
    public func replyToProblem(_ replyTo: String, requests: String) -> String? {
        guard cluster, HashSlot.of(replyTo) != HashSlot.of(requests) else { return nil }
        let tag = HashSlot.tag(of: requests).map { " (hash tag {\($0)})" } ?? ""
        return "reply_to \(replyTo) is in another Redis Cluster slot than the request stream \(requests)\(tag): use a key with the same hash tag"
    }
}
