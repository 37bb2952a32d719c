@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
@testable import LLMQWorker
import Synchronization
import Testing

/// How many WAITs were sent.
private final class Count: Sendable {
    private let value = Mutex(0)
    func add() { value.withLock { $0 += 1 } }
    var current: Int { value.withLock { $0 } }
}

@Suite("One WAIT shared by the replies written before it")
struct ReplicationWaitsTests {
    @Test("Concurrent replies share few WAITs, and each gets the answer of one sent after it was written")
    func shared() async {
        let waits = ReplicationWaits()
        let sent = Count()
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    await waits.afterReply(on: "{a}:requests") {
                        sent.add()
                        try? await Task.sleep(for: .milliseconds(20))
                        return true
                    }
                }
            }
            var results: [Bool] = []
            for await result in group { results.append(result) }
            return results
        }
        #expect(results.count == 50 && results.allSatisfy { $0 })
        #expect((1...25).contains(sent.current), "\(sent.current) WAITs for 50 replies")
    }

    @Test("A reply written while a WAIT is in flight waits for the next one, and a short answer reaches the replies it covers")
    func writtenDuringAWait() async {
        let waits = ReplicationWaits()
        let sent = Count()
        async let first = waits.afterReply(on: "{a}:requests") {
            sent.add()
            try? await Task.sleep(for: .milliseconds(300))
            return false
        }
        try? await Task.sleep(for: .milliseconds(50))
        let second = await waits.afterReply(on: "{a}:requests") {
            sent.add()
            return true
        }
        #expect(await first == false)
        #expect(second == true, "answered by a WAIT of its own, sent after it was written")
        #expect(sent.current == 2)
        // Another stream has WAITs of its own.
        #expect(await waits.afterReply(on: "{b}:requests") { false } == false)
    }
}
