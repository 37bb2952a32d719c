import Foundation
@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
import LLMQRedis
@testable import LLMQWorker
import Testing

@Suite("The reply script after a claim", .timeLimit(.minutes(1)), .withRedis)
struct ReplyMarkerTests {
    @Test("An entry claimed and answered by another consumer cannot be answered again by the first one as lost")
    func claimedThenAnsweredIsNotAnsweredAgain() async throws {
        let (redis, client) = try RedisFixture.current
        let streams = WorkerConfiguration.Streams()
        let first = RequestStream(redis: redis.configuration, streams: streams, consumer: "first", readBlock: .milliseconds(100))
        let second = RequestStream(redis: redis.configuration, streams: streams, consumer: "second", readBlock: .milliseconds(100))
        defer {
            first.shutdown()
            second.shutdown()
        }
        try await first.ensureGroup(on: streams.requests)
        let id = try await publish(client, [("prompt", "hello")])
        #expect(try await first.readNew(from: [streams.requests], count: 1, block: .milliseconds(100))[streams.requests]?.map(\.id) == [id])
        // The first consumer stalls (a failover, a long pause); the second claims and answers.
        var cursor = "0-0"
        let claimed = try await second.claimIdle(on: streams.requests, minIdle: .zero, count: 10, cursor: &cursor)
        #expect(claimed.map(\.entry.id) == [id] && claimed.first?.deliveries == 2)
        #expect(try await second.reply(to: id, on: streams.requests, stream: streams.replies, fields: [("status", "ok")], status: "ok", errorCode: "") == .written)
        // The first finds the entry gone from the group, and the second's reply left the marker
        // that says it was answered, in either mode.
        #expect(try await first.reply(to: id, on: streams.requests, stream: streams.replies, fields: [("status", "ok")], status: "ok", errorCode: "") == .replied)
        #expect(try await first.reply(to: id, on: streams.requests, stream: streams.replies, fields: [("status", "ok")], status: "ok", errorCode: "", mode: .lost) == .replied)
        #expect(try await client.send("XLEN", streams.replies).int == 1, "one reply")
    }
}
