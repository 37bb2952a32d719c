/// A `CLUSTER SLOTS` reply: ranges of slots, each with its master and replicas.
///
/// Each range is `[start, end, master, replica...]`, each node `[host, port, id?, metadata?]`
/// (the ID since Redis 4, the metadata map since Redis 7, both ignored beyond the ID). A host
/// may be `""` or `?` when the node does not know its own address (``Node/host``).
public struct ClusterSlots: Sendable, Hashable {
    public struct Node: Sendable, Hashable {
        /// As announced: empty or `?` when unknown, meaning the node that answered.
        public var host: String
        public var port: Int
        public var id: String?

        public init(host: String, port: Int, id: String? = nil) {
            self.host = host
            self.port = port
            self.id = id
        }
    }

    public struct Range: Sendable, Hashable {
        public var slots: ClosedRange<Int>
        public var master: Node
        public var replicas: [Node]

        public init(slots: ClosedRange<Int>, master: Node, replicas: [Node] = []) {
            self.slots = slots
            self.master = master
            self.replicas = replicas
        }
    }

    public var ranges: [Range]

    public init(ranges: [Range]) {
        self.ranges = ranges
    }

    public init(decoding reply: RESPValue) throws(RedisError) {
        var ranges: [Range] = []
        for (index, row) in try reply.decodeArray("CLUSTER SLOTS", "reply").enumerated() {
            ranges.append(try Self.range(decoding: row, number: index + 1))
        }
        self.init(ranges: ranges)
    }

    private static func range(decoding row: RESPValue, number: Int) throws(RedisError) -> Range {
        let members = try row.decodeArray("CLUSTER SLOTS", "range \(number)")
        guard members.count >= 3 else {
            throw .unexpectedReply("CLUSTER SLOTS", "range \(number) has \(members.count) elements, no master")
        }
        let start = try members[0].decodeInt("CLUSTER SLOTS", "start slot of range \(number)")
        let end = try members[1].decodeInt("CLUSTER SLOTS", "end slot of range \(number)")
        guard 0 <= start, start <= end, end < HashSlot.count else {
            throw .unexpectedReply("CLUSTER SLOTS", "range \(number) is \(start)-\(end), not within 0-\(HashSlot.count - 1)")
        }
        var nodes: [Node] = []
        for (position, member) in members[2...].enumerated() {
            nodes.append(try node(decoding: member, what: "node \(position + 1) of range \(number)"))
        }
        return Range(slots: start...end, master: nodes[0], replicas: Array(nodes.dropFirst()))
    }

    private static func node(decoding value: RESPValue, what: String) throws(RedisError) -> Node {
        let fields = try value.decodeArray("CLUSTER SLOTS", what)
        guard fields.count >= 2 else { throw .unexpectedReply("CLUSTER SLOTS", "\(what) has no port") }
        let host = try fields[0].decodeString("CLUSTER SLOTS", "host of \(what)")
        let port = try fields[1].decodeInt("CLUSTER SLOTS", "port of \(what)")
        guard (0...65535).contains(port) else { throw .unexpectedReply("CLUSTER SLOTS", "port \(port) of \(what) is out of range") }
        let id = fields.count > 2 ? try fields[2].decodeString("CLUSTER SLOTS", "ID of \(what)") : nil
        return Node(host: host, port: port, id: id)
    }
}
