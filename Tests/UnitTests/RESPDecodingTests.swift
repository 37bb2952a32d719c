@testable import LLMQRedis
@testable import LLMQWorker
import Testing

/// Replies built by hand as Redis 7.0 sends them over RESP2 (what hiredis 0.14 speaks).
private func bulk(_ text: String) -> RESPValue { .bulkString(Array(text.utf8)) }
private func map(_ pairs: [(String, RESPValue)]) -> RESPValue { .array(pairs.flatMap { [bulk($0.0), $0.1] }) }
private func entry(_ id: String, _ fields: [String]) -> RESPValue { .array([bulk(id), .array(fields.map(bulk))]) }

/// The message of the `unexpectedReply` error that decoding `body` throws; nil if none is thrown.
private func decodingError(_ body: () throws(RedisError) -> Void) -> String? {
    do throws(RedisError) {
        try body()
        return nil
    } catch {
        #expect(error.code == .unexpectedReply)
        return error.message
    }
}

@Suite("Typed Redis replies")
struct RESPDecodingTests {
    // MARK: XREAD / XREADGROUP

    @Test("XREAD: streams in the order Redis answered, entries with their fields; a null reply has none")
    func streams() throws {
        let reply = RESPValue.array([
            .array([bulk("b"), .array([entry("2-0", ["prompt", "hi", "id", "x"])])]),
            .array([bulk("a"), .array([entry("1-0", ["k", "v"]), entry("1-1", [])])]),
        ])
        let decoded = try StreamsReply(decoding: reply, command: "XREADGROUP")
        #expect(decoded.streams.map(\.name) == ["b", "a"])
        #expect(decoded.entries.map(\.id) == ["2-0", "1-0", "1-1"])
        #expect(decoded.streams[0].entries[0].textFields.map(\.name) == ["prompt", "id"])
        #expect(decoded.streams[0].entries[0].textFields.map(\.value) == ["hi", "x"])
        #expect(decoded.entriesByStream["a"]?.count == 2)
        #expect(!decoded.isEmpty)
        #expect(try StreamsReply(decoding: .null).isEmpty)
        #expect(try StreamsReply(decoding: .null).streams.isEmpty)
    }

    @Test("XREADGROUP: an entry deleted while pending has nil fields")
    func deletedEntry() throws {
        let reply = RESPValue.array([.array([bulk("a"), .array([.array([bulk("1-0"), .null])])])])
        let entry = try #require(try StreamsReply(decoding: reply, command: "XREADGROUP").entries.first)
        #expect(entry.id == "1-0")
        #expect(entry.fields == nil)
    }

    @Test("XREAD: each malformed token is named")
    func malformedStreams() {
        let cases: [(RESPValue, String)] = [
            (.integer(1), "XREADGROUP: reply is not an array"),
            (.array([bulk("a")]), "XREADGROUP: stream 1 is not an array"),
            (.array([.array([bulk("a")])]), "XREADGROUP: stream 1 has 1 elements, not name and entries"),
            (.array([.array([.null, .array([])])]), "XREADGROUP: stream 1 name is not a string"),
            (.array([.array([bulk("a"), .integer(3)])]), "XREADGROUP: entries of stream a is not an array"),
            (.array([.array([bulk("a"), .array([.array([.integer(1), .array([])])])])]), "XREADGROUP: entry ID is not a string"),
            (.array([.array([bulk("a"), .array([.array([bulk("1-0")])])])]), "XREADGROUP: entry has 1 elements, not ID and fields"),
            (.array([.array([bulk("a"), .array([entry("1-0", ["k"])])])]), "XREADGROUP: entry 1-0 has an unpaired field name"),
            (
                .array([.array([bulk("a"), .array([.array([bulk("1-0"), .array([bulk("k"), .null])])])])]),
                "XREADGROUP: field value 1 of entry 1-0 is not a string"
            ),
            (.array([.array([bulk("a"), .array([.array([bulk("1-0"), bulk("k")])])])]), "XREADGROUP: fields of entry 1-0 is not an array"),
        ]
        for (reply, message) in cases {
            #expect(decodingError { () throws(RedisError) in _ = try StreamsReply(decoding: reply, command: "XREADGROUP") } == message)
        }
    }

    // MARK: XPENDING

    @Test("XPENDING: rows of ID, consumer, idle time and delivery count; none when nothing is pending")
    func pending() throws {
        let rows = try PendingEntry.list(decoding: .array([.array([bulk("5-0"), bulk("w1"), .integer(1200), .integer(3)])]))
        #expect(rows.count == 1)
        #expect(rows[0].id == "5-0")
        #expect(rows[0].consumer == "w1")
        #expect(rows[0].idleMilliseconds == 1200)
        #expect(rows[0].deliveries == 3)
        #expect(try PendingEntry.list(decoding: .array([])).isEmpty)
    }

    @Test("XPENDING: a malformed row names its token; a delivery count is never defaulted")
    func malformedPending() {
        let cases: [(RESPValue, String)] = [
            (.null, "XPENDING: reply is not an array"),
            (.array([bulk("5-0")]), "XPENDING: row is not an array"),
            (.array([.array([bulk("5-0"), bulk("w1"), .integer(1)])]), "XPENDING: row has 3 elements, not 4"),
            (.array([.array([bulk("5-0"), bulk("w1"), .integer(1), .null])]), "XPENDING: delivery count is not an integer"),
            (.array([.array([bulk("5-0"), bulk("w1"), bulk("x"), .integer(1)])]), "XPENDING: idle time is not an integer"),
            (.array([.array([bulk("5-0"), .integer(4), .integer(1), .integer(1)])]), "XPENDING: consumer is not a string"),
        ]
        for (reply, message) in cases {
            #expect(decodingError { () throws(RedisError) in _ = try PendingEntry.list(decoding: reply) } == message)
        }
    }

    // MARK: XINFO GROUPS / CONSUMERS

    static let group7: [(String, RESPValue)] = [
        ("name", bulk("workers")), ("consumers", .integer(2)), ("pending", .integer(4)),
        ("last-delivered-id", bulk("9-0")), ("entries-read", .integer(11)), ("lag", .integer(1)),
    ]

    @Test("XINFO GROUPS: fields by name, unknown ones ignored, lag and entries-read null or missing read as nil")
    func groups() throws {
        let rows = try StreamGroupInfo.list(
            decoding: .array([map(Self.group7 + [("future-field", bulk("x"))]), map(Self.group7.map { $0.0 == "lag" ? ($0.0, .null) : $0 })]))
        #expect(rows.count == 2)
        #expect(rows[0].name == "workers")
        #expect(rows[0].consumers == 2)
        #expect(rows[0].pending == 4)
        #expect(rows[0].lastDeliveredID == "9-0")
        #expect(rows[0].entriesRead == 11)
        #expect(rows[0].lag == 1)
        #expect(rows[1].lag == nil)
        // Redis 6.2: neither entries-read nor lag.
        let redis6 = try StreamGroupInfo(decoding: map(Self.group7.filter { $0.0 != "lag" && $0.0 != "entries-read" }))
        #expect(redis6.lag == nil)
        #expect(redis6.entriesRead == nil)
        #expect(try StreamGroupInfo.list(decoding: .array([])).isEmpty)
    }

    @Test("XINFO GROUPS: a missing or mistyped field is named, never defaulted")
    func malformedGroups() {
        func replacing(_ name: String, with value: RESPValue?) -> RESPValue {
            .array([map(Self.group7.compactMap { $0.0 == name ? value.map { (name, $0) } : $0 })])
        }
        let cases: [(RESPValue, String)] = [
            (replacing("pending", with: bulk("many")), "XINFO GROUPS: field 'pending' is not an integer"),
            (replacing("pending", with: nil), "XINFO GROUPS: no field 'pending'"),
            (replacing("name", with: .null), "XINFO GROUPS: field 'name' is not a string"),
            (replacing("last-delivered-id", with: nil), "XINFO GROUPS: no field 'last-delivered-id'"),
            (replacing("lag", with: bulk("?")), "XINFO GROUPS: field 'lag' is not an integer"),
            (.array([.array([bulk("name")])]), "XINFO GROUPS: row has an unpaired field name"),
            (.array([.array([.integer(1), bulk("x")])]), "XINFO GROUPS: field name 1 is not a string"),
            (.array([bulk("workers")]), "XINFO GROUPS: row is not an array"),
            (bulk("workers"), "XINFO GROUPS: reply is not an array"),
        ]
        for (reply, message) in cases {
            #expect(decodingError { () throws(RedisError) in _ = try StreamGroupInfo.list(decoding: reply) } == message)
        }
    }

    @Test("XINFO CONSUMERS: name, pending and idle; inactive (Redis 7.2) when present")
    func consumers() throws {
        let rows = try StreamConsumerInfo.list(
            decoding: .array([
                map([("name", bulk("w1")), ("pending", .integer(2)), ("idle", .integer(350))]),
                map([("name", bulk("w2")), ("pending", .integer(0)), ("idle", .integer(5)), ("inactive", .integer(7))]),
            ]))
        #expect(rows.map(\.name) == ["w1", "w2"])
        #expect(rows.map(\.pending) == [2, 0])
        #expect(rows.map(\.idleMilliseconds) == [350, 5])
        #expect(rows.map(\.inactiveMilliseconds) == [nil, 7])
        let message = decodingError { () throws(RedisError) in
            _ = try StreamConsumerInfo.list(decoding: .array([map([("name", bulk("w1")), ("pending", .integer(2))])]))
        }
        #expect(message == "XINFO CONSUMERS: no field 'idle'")
        let unnamed = decodingError { () throws(RedisError) in
            _ = try StreamConsumerInfo(decoding: map([("name", .null), ("pending", .integer(2)), ("idle", .integer(1))]))
        }
        #expect(unnamed == "XINFO CONSUMERS: field 'name' is not a string")
    }

    // MARK: CLUSTER SLOTS

    static func node(_ host: String, _ port: Int, _ id: String) -> RESPValue {
        // Redis 7 adds a metadata map (hostname, ...) after the ID.
        .array([bulk(host), .integer(port), bulk(id), .array([])])
    }

    @Test("CLUSTER SLOTS: ranges with master and replicas; an unknown host is the node asked")
    func clusterSlots() throws {
        let reply = RESPValue.array([
            .array([.integer(0), .integer(8191), Self.node("10.0.0.1", 7000, "a"), Self.node("10.0.0.2", 7001, "b")]),
            .array([.integer(8192), .integer(16383), Self.node("", 7002, "c")]),
        ])
        let slots = try ClusterSlots(decoding: reply)
        #expect(slots.ranges.count == 2)
        #expect(slots.ranges[0].slots == 0...8191)
        #expect(slots.ranges[0].master == ClusterSlots.Node(host: "10.0.0.1", port: 7000, id: "a"))
        #expect(slots.ranges[0].replicas.map(\.port) == [7001])
        let routes = try #require(ClusterRouting.slotMap(slots, askedAt: RedisNode(host: "seed", port: 1)))
        #expect(routes.owners[0] == RedisNode(host: "10.0.0.1", port: 7000))
        #expect(routes.owners[16383] == RedisNode(host: "seed", port: 7002))
        #expect(routes.nodes.count == 3)
        // A cluster with no slots assigned yet has no map.
        #expect(ClusterRouting.slotMap(try ClusterSlots(decoding: .array([])), askedAt: RedisNode(host: "seed", port: 1)) == nil)
    }

    @Test("CLUSTER SLOTS: each malformed token is named")
    func malformedClusterSlots() {
        let cases: [(RESPValue, String)] = [
            (.null, "CLUSTER SLOTS: reply is not an array"),
            (.array([.array([.integer(0), .integer(10)])]), "CLUSTER SLOTS: range 1 has 2 elements, no master"),
            (.array([.array([bulk("x"), .integer(10), Self.node("h", 1, "a")])]), "CLUSTER SLOTS: start slot of range 1 is not an integer"),
            (.array([.array([.integer(10), .integer(5), Self.node("h", 1, "a")])]), "CLUSTER SLOTS: range 1 is 10-5, not within 0-16383"),
            (
                .array([.array([.integer(0), .integer(5), .array([bulk("h"), bulk("port")])])]),
                "CLUSTER SLOTS: port of node 1 of range 1 is not an integer"
            ),
            (.array([.array([.integer(0), .integer(5), .array([bulk("h")])])]), "CLUSTER SLOTS: node 1 of range 1 has no port"),
            (
                .array([.array([.integer(0), .integer(5), Self.node("h", 1, "a"), .integer(3)])]),
                "CLUSTER SLOTS: node 2 of range 1 is not an array"
            ),
        ]
        for (reply, message) in cases {
            #expect(decodingError { () throws(RedisError) in _ = try ClusterSlots(decoding: reply) } == message)
        }
    }

    // MARK: llmq's scripts

    @Test("The claim script: cursor, entries with their delivery counts, deleted IDs")
    func claimReply() throws {
        let reply = RESPValue.array([
            bulk("7-0"), .array([.array([bulk("3-0"), .array([bulk("prompt"), bulk("hi")]), .integer(2)])]), .array([bulk("4-0")]),
        ])
        let claimed = try ClaimScriptReply(decoding: reply)
        #expect(claimed.cursor == "7-0")
        #expect(claimed.entries.map(\.entry.id) == ["3-0"])
        #expect(claimed.entries.map(\.deliveries) == [2])
        #expect(claimed.deleted == ["4-0"])
        let noCount = RESPValue.array([bulk("0-0"), .array([.array([bulk("3-0"), .array([]), .null])]), .array([])])
        #expect(decodingError { () throws(RedisError) in _ = try ClaimScriptReply(decoding: noCount) } == "claim script: delivery count of 3-0 is not an integer")
        let zero = RESPValue.array([bulk("0-0"), .array([.array([bulk("3-0"), .array([]), .integer(0)])]), .array([])])
        #expect(decodingError { () throws(RedisError) in _ = try ClaimScriptReply(decoding: zero) } == "claim script: delivery count of 3-0 is 0")
        #expect(decodingError { () throws(RedisError) in _ = try ClaimScriptReply(decoding: .array([bulk("0-0")])) } == "claim script: reply has 1 elements, not 3")
    }

    @Test("The fair take script: entries with delivery count and user, deleted IDs, held back, last delivered ID")
    func fairTakeReply() throws {
        let reply = RESPValue.array([
            .array([.array([bulk("3-0"), .array([bulk("prompt"), bulk("hi")]), .integer(1), bulk("ann")])]),
            .array([bulk("4-0")]), .integer(7), bulk("9-0"),
        ])
        let taken = try FairTakeReply(decoding: reply)
        #expect(taken.entries.map(\.entry.id) == ["3-0"] && taken.entries.map(\.user) == ["ann"] && taken.entries.map(\.deliveries) == [1])
        #expect(taken.deleted == ["4-0"] && taken.heldBack == 7 && taken.lastDelivered == "9-0")
        let noUser = RESPValue.array([.array([.array([bulk("3-0"), .array([]), .integer(1)])]), .array([]), .integer(0), bulk("3-0")])
        #expect(decodingError { () throws(RedisError) in _ = try FairTakeReply(decoding: noUser) } == "fair take script: taken entry 1 has 3 elements, not 4")
        let noHeld = RESPValue.array([.array([]), .array([]), .null, bulk("3-0")])
        #expect(decodingError { () throws(RedisError) in _ = try FairTakeReply(decoding: noHeld) } == "fair take script: held back is not an integer")
    }

    @Test("The reply script's answer")
    func replyResult() throws {
        #expect(try RequestStream.ReplyResult(decoding: .integer(1)) == .written)
        #expect(try RequestStream.ReplyResult(decoding: .integer(0)) == .notOurs)
        #expect(try RequestStream.ReplyResult(decoding: .integer(2)) == .goneFromGroup)
        #expect(try RequestStream.ReplyResult(decoding: .integer(3)) == .replied)
        #expect(decodingError { () throws(RedisError) in _ = try RequestStream.ReplyResult(decoding: .integer(4)) } != nil)
        #expect(decodingError { () throws(RedisError) in _ = try RequestStream.ReplyResult(decoding: .null) } != nil)
    }
}
