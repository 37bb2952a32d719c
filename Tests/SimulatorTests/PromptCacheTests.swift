import Testing

@testable import LLMQSimulator

/// The token model and the prompt cache as pure values, without a server.
@Suite("Prompt tokens and cache")
struct PromptCacheTests {
    private let system = ChatMessage(role: "system", content: "You are terse.")

    /// A request for `messages` whose reply is `reply`.
    private func request(
        _ messages: [ChatMessage],
        reply: String = "an answer",
        reuse: Bool = true,
        slot: Int? = nil
    ) -> CacheRequest {
        CacheRequest(
            prompt: PromptTokens.sequence(messages),
            reply: PromptTokens.reply(reply),
            reuse: reuse,
            preferredSlot: slot
        )
    }

    @Test func countIsTheSequenceLength() {
        let messages = [system, ChatMessage(role: "user", content: " one\ttwo\nthree ")]
        #expect(PromptTokens.sequence(messages).count == 4 + 3 + 4 + 3)
        #expect(Generator.promptTokens(messages) == PromptTokens.sequence(messages).count)
    }

    @Test func equalTextGivesEqualTokensAndRolesMatter() {
        let first = PromptTokens.sequence([ChatMessage(role: "user", content: "hello  world")])
        let second = PromptTokens.sequence([ChatMessage(role: "user", content: "hello world")])
        let otherRole = PromptTokens.sequence([ChatMessage(role: "system", content: "hello world")])
        let otherWord = PromptTokens.sequence([ChatMessage(role: "user", content: "hello worlds")])
        #expect(first == second)
        #expect(first != otherRole)
        #expect(PromptCache.commonPrefix(first, otherWord) == first.count - 2)
    }

    @Test func theNextTurnRepeatsPromptAndReply() {
        let turn1 = [system, ChatMessage(role: "user", content: "hi there")]
        let held = PromptTokens.sequence(turn1) + PromptTokens.reply("quick brown fox")
        let turn2 = turn1 + [
            ChatMessage(role: "assistant", content: "quick brown fox"),
            ChatMessage(role: "user", content: "and then?"),
        ]
        let next = PromptTokens.sequence(turn2)
        #expect(PromptCache.commonPrefix(held, next) == held.count)
        // What is new: the assistant message's end marker and the new user message.
        #expect(next.count - held.count == 1 + 4 + 2)
    }

    @Test func aGrowingConversationHitsItsSlot() {
        var cache = PromptCache(slots: 2, ramEntries: 0)
        let turn1 = [system, ChatMessage(role: "user", content: "hi there")]
        let first = request(turn1, reply: "quick brown fox")
        let slot = cache.choose(among: [0, 1], for: first)
        #expect(slot == 0)
        #expect(cache.load(first, into: 0) == 0)

        let turn2 = turn1 + [
            ChatMessage(role: "assistant", content: "quick brown fox"),
            ChatMessage(role: "user", content: "and then?"),
        ]
        let second = request(turn2)
        // Slot 1 is the less recently used, but slot 0 holds the conversation.
        #expect(cache.choose(among: [1, 0], for: second) == 0)
        #expect(cache.load(second, into: 0) == first.prompt.count + first.reply.count)
        #expect(cache.slotTokenCounts == [second.prompt.count + second.reply.count, 0])
    }

    @Test func unrelatedPromptsGoToTheLeastRecentlyUsedSlot() {
        var cache = PromptCache(slots: 3, ramEntries: 0)
        let first = request([ChatMessage(role: "user", content: "alpha")])
        let second = request([ChatMessage(role: "system", content: "beta")])
        #expect(cache.load(first, into: 0) == 0)
        #expect(cache.load(second, into: 1) == 0)
        let third = request([ChatMessage(role: "tool", content: "gamma")])
        #expect(cache.choose(among: [0, 1, 2], for: third) == 2)
        #expect(cache.load(third, into: 2) == 0)
        #expect(cache.choose(among: [1, 2, 0], for: request([ChatMessage(role: "developer", content: "x")])) == 0)
    }

    @Test func aRepeatedPromptComputesItsLastToken() {
        var cache = PromptCache(slots: 1, ramEntries: 0)
        let same = request([system, ChatMessage(role: "user", content: "again")])
        #expect(cache.load(same, into: 0) == 0)
        #expect(cache.load(same, into: 0) == same.prompt.count - 1)
    }

    @Test func theRAMCacheKeepsDisplacedConversations() {
        for entries in [0, 4] {
            var cache = PromptCache(slots: 1, ramEntries: entries)
            let a = request([ChatMessage(role: "user", content: "first conversation")], reply: "one two")
            let b = request([ChatMessage(role: "user", content: "second conversation")], reply: "three four")
            #expect(cache.load(a, into: 0) == 0)
            #expect(cache.load(b, into: 0) == 3)  // only the opening template tokens are shared
            let again = request([ChatMessage(role: "user", content: "first conversation")], reply: "five")
            let cached = cache.load(again, into: 0)
            #expect(cached == (entries > 0 ? again.prompt.count - 1 : 3), "entries \(entries)")
            #expect(cache.ramEntryCount == min(entries, 2), "entries \(entries)")
        }
    }

    @Test func theRAMCacheForgetsTheLeastRecentlyUsed() {
        var cache = PromptCache(slots: 1, ramEntries: 2)
        let conversations = (0..<4).map { request([ChatMessage(role: "user", content: "topic \($0) words")]) }
        for conversation in conversations {
            _ = cache.load(conversation, into: 0)
        }
        // RAM holds 1 and 2 (0 fell out), the slot holds 3.
        #expect(cache.ramEntryCount == 2)
        let full = conversations[0].prompt.count - 1
        #expect(cache.load(conversations[2], into: 0) == full)
        #expect(cache.load(conversations[0], into: 0) < full)
    }

    @Test func cachePromptFalseReusesNothingButStillFillsTheSlot() {
        var cache = PromptCache(slots: 1, ramEntries: 4)
        let messages = [system, ChatMessage(role: "user", content: "hello")]
        #expect(cache.load(request(messages), into: 0) == 0)
        #expect(cache.load(request(messages, reuse: false), into: 0) == 0)
        #expect(cache.load(request(messages), into: 0) > 0)
    }

    @Test func idSlotIsHonouredWhenFree() {
        var cache = PromptCache(slots: 2, ramEntries: 0)
        let messages = [system, ChatMessage(role: "user", content: "hello")]
        _ = cache.load(request(messages), into: 0)
        #expect(cache.choose(among: [0, 1], for: request(messages)) == 0)
        #expect(cache.choose(among: [0, 1], for: request(messages, slot: 1)) == 1)
        // A busy or unknown slot: chosen as if none was named.
        #expect(cache.choose(among: [0], for: request(messages, slot: 1)) == 0)
        #expect(cache.choose(among: [0, 1], for: request(messages, slot: 7)) == 0)
    }

    @Test func prefixHelpers() {
        #expect(PromptCache.commonPrefix([1, 2, 3], [1, 2, 4, 5]) == 2)
        #expect(PromptCache.commonPrefix([], [1]) == 0)
        #expect(PromptCache.isPrefix([1, 2, 3], of: [1, 2], then: [3, 4]))
        #expect(PromptCache.isPrefix([1], of: [1, 2], then: []))
        #expect(!PromptCache.isPrefix([1, 2, 5], of: [1, 2], then: [3]))
        #expect(!PromptCache.isPrefix([1, 2, 3, 4], of: [1, 2], then: [3]))
        #expect(!PromptCache.isPrefix([9], of: [1], then: []))
    }
}
