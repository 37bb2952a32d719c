extension WorkerConfiguration.Queue {
    /// The served queues: `polling.poll<Name>: true`, the `queues` object, and `LLMQ_QUEUES`,
    /// less those whose poll flag is false; highest priority first, then by name.
    static func served(
        reading: ConfigurationReading, streams: WorkerConfiguration.Streams, file: ConfigFile?
    ) throws(ConfigurationError) -> [Self] {
        let root = reading.root
        var names: [String] = []
        var excluded: Set<String> = []
        for name in file?.pollingNames ?? [] {
            if try root.scoped(to: "polling").bool("poll\(name)") == true { names.append(name) } else { excluded.insert(name) }
        }
        names += (file?.queueNames ?? []).filter { !excluded.contains($0) }
        for name in try root.list("queues") ?? [] where !name.isEmpty {
            guard ConfigurationLoader.isValidQueueName(name) else {
                throw reading.error("queues", "\"\(name)\" is not a queue name (1-64 letters, digits, -, _ and .)")
            }
            names.append(name)
        }
        var seen: Set<String> = []
        names = names.filter { seen.insert($0).inserted }

        var queues: [Self] = []
        for name in names {
            let queue = try Self(reading: root.scoped(to: "queues").scoped(to: name), streams: streams)
            if let other = queues.first(where: { $0.stream == queue.stream }) {
                throw reading.error("queues.\(name).stream", "\"\(queue.stream)\" is also the stream of queue \(other.name); each queue needs its own")
            }
            queues.append(queue)
        }
        return queues.sorted { ($0.priority, $1.name) > ($1.priority, $0.name) }
    }

    /// `queues.<Queue>.*`; its stream may not be one of the shared keys.
    init(reading queue: ConfigurationScope, streams: WorkerConfiguration.Streams) throws(ConfigurationError) {
        let name = String(queue.prefix.dropFirst("queues.".count))
        self.init(name: name, stream: try queue.name("stream") ?? "\(streams.requests):\(name)")
        try queue.update(&priority, "priority")
        try queue.update(&weight, "weight")
        try queue.update(&minimumShare, "minShare")
        let reserved: [(String, String)] = [
            (streams.replies, "the reply stream (streams.replies)"), (streams.dead, "the dead-letter stream (streams.dead)"),
            (streams.stats, "the stats hash (streams.stats)"),
        ] + (streams.keepAnswered ? [(streams.answered, "the history stream (streams.answered)")] : [])
        if let clash = reserved.first(where: { $0.0 == stream }) {
            throw queue.error("stream", "\"\(stream)\" is \(clash.1); a queue needs a stream of its own")
        }
    }
}
