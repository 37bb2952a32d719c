import Foundation
@testable import LLMQBackends
import LLMQConfiguration
import LLMQContract
import LLMQRedis
import Testing

/// Conversation affinity's pure parts: which backend is a conversation's home, and which
/// requests belong to a conversation.
@Suite("Conversation affinity: homes and keys")
struct AffinityTests {
    private func homes(_ selection: MemberSelection, names: [String], keys: Int, available: Set<Int>? = nil) -> [Int] {
        (0..<keys).map { key in
            selection.home(for: "session:\(key)", model: nil, isAvailable: { available?.contains($0) ?? true }, names: names)!
        }
    }

    @Test("Homes follow the weights (3:1 within 2 points over 20,000 conversations), are stable, and a member that leaves moves only its own")
    func rendezvous() {
        let names = ["a", "b", "c"]
        let selection = MemberSelection(profiles: [.init(weight: 3), .init(weight: 1), .init(weight: 1)], slots: [8, 8, 8])
        let before = homes(selection, names: names, keys: 20_000)
        let share = Double(before.filter { $0 == 0 }.count) / 20_000
        #expect(abs(share - 0.6) <= 0.02, "a's share: \(share)")
        #expect(homes(selection, names: names, keys: 20_000) == before, "the same key, the same home")
        // c's breaker is open: its conversations go elsewhere, nobody else's move.
        let without = homes(selection, names: names, keys: 20_000, available: [0, 1])
        for (old, new) in zip(before, without) where old != 2 { #expect(old == new) }
        #expect(!without.contains(2))
        // Renaming a member moves conversations: the hash is of the name, as every worker names it.
        #expect(homes(selection, names: ["a", "b", "d"], keys: 2000) != Array(before.prefix(2000)))
    }

    @Test("A member not serving the model is never home; none at all is nil")
    func models() {
        let selection = MemberSelection(profiles: [.init(models: ["x"]), .init(models: ["y"])], slots: [4, 4])
        for key in 0..<100 {
            #expect(selection.home(for: "k\(key)", model: "y", isAvailable: { _ in true }, names: ["a", "b"]) == 1)
        }
        #expect(selection.home(for: "k", model: "z", isAvailable: { _ in true }, names: ["a", "b"]) == nil)
    }

    private func parse(_ fields: [(String, String)]) -> Result<ParsedRequest, RequestRejection> {
        RequestParser(limits: WorkerConfiguration.Limits(), replyToPrefix: "llmq:")
            .parse(StreamEntry(id: "1-0", fields: fields.map { (Array($0.0.utf8), Array($0.1.utf8)) }), now: 2)
    }

    private func key(_ fields: [(String, String)]) -> String?? {
        guard case .success(let request) = parse(fields) else { return .none }
        return .some(request.chat.affinityKey)
    }

    @Test("A session names the conversation; without one, a next turn is known by its opening, which every turn repeats; a first turn has no key")
    func keys() {
        #expect(key([("prompt", "hi"), ("session", "s1")]) == .some("session:s1"))
        #expect(key([("prompt", "hi")]) == .some(nil), "a first turn goes where the weights send it")
        let opening = #"{"role":"system","content":"be brief"},{"role":"user","content":"hello"}"#
        let second = key([("messages", "[\(opening),{\"role\":\"assistant\",\"content\":\"hi\"},{\"role\":\"user\",\"content\":\"more\"}]")])
        let third = key([("messages", "[\(opening),{\"role\":\"assistant\",\"content\":\"hi\"},{\"role\":\"user\",\"content\":\"more\"},{\"role\":\"assistant\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":\"again\"}]")])
        #expect(second != .some(nil) && second == third, "\(String(describing: second)) \(String(describing: third))")
        let other = key([("messages", #"[{"role":"system","content":"be brief"},{"role":"user","content":"bye"},{"role":"assistant","content":"hi"},{"role":"user","content":"more"}]"#)])
        #expect(other != second, "another opening, another conversation")
        for bad in ["", String(repeating: "s", count: 257)] {
            guard case .failure(let rejection) = parse([("prompt", "hi"), ("session", bad)]) else {
                Issue.record("session \(bad.count) bytes must be refused")
                continue
            }
            #expect(rejection.message == "session must be UTF-8 text of 1 to 256 bytes")
        }
    }
}
