import Foundation
import HummingbirdTesting
import Testing

@testable import LLMQSimulator

/// One conversation as a client keeps it: the messages so far, grown by each reply and each new question.
private struct Conversation {
    var messages: [[String: String]]

    init(system: String) {
        messages = [["role": "system", "content": system]]
    }

    /// The body of the next request: the history plus `question`, and any extra fields.
    mutating func ask(_ question: String, maxTokens: Int = 4, extra: [String: Any] = [:]) throws -> String {
        messages.append(["role": "user", "content": question])
        var body: [String: Any] = ["model": "sim", "messages": messages, "max_tokens": maxTokens]
        body.merge(extra) { _, new in new }
        return String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
    }

    /// Keeps the reply in the history, as a chat client does.
    mutating func record(_ reply: Reply) {
        messages.append(["role": "assistant", "content": reply.content])
    }
}

/// The cache-related fields of an OpenAI-format answer.
private struct Reply {
    var content: String
    var promptTokens: Int
    var completionTokens: Int
    var cachedTokens: Int
    var cacheN: Int
    var promptN: Int
    var promptMs: Double

    init(_ response: TestClient.Response) throws {
        #expect(response.status == .ok)
        let object = try json(response)
        let choice = try #require((object["choices"] as? [[String: Any]])?.first)
        content = try #require((choice["message"] as? [String: Any])?["content"] as? String)
        let usage = try #require(object["usage"] as? [String: Any])
        promptTokens = try #require(usage["prompt_tokens"] as? Int)
        completionTokens = try #require(usage["completion_tokens"] as? Int)
        cachedTokens = try #require((usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int)
        let timings = try #require(object["timings"] as? [String: Any])
        cacheN = try #require(timings["cache_n"] as? Int)
        promptN = try #require(timings["prompt_n"] as? Int)
        promptMs = try #require((timings["prompt_ms"] as? NSNumber)?.doubleValue)
    }
}

extension SimulatorClient {
    fileprivate func ask(_ conversation: inout Conversation, _ question: String, extra: [String: Any] = [:]) async throws -> Reply {
        let reply = try Reply(try await post("/v1/chat/completions", try conversation.ask(question, extra: extra)))
        conversation.record(reply)
        return reply
    }
}

/// A conversation's next turn reuses what the previous one left in a slot or in the RAM cache, as on llama-server.
@Suite("Prompt cache over HTTP", .serialized)
struct PromptCacheServerTests {
    @Test(.withSimulator(.init(slots: 2, tokenMilliseconds: 0, promptTokenMilliseconds: 2)))
    func aGrowingConversationHitsTheCache() async throws {
        let client = try SimulatorFixture.current
        var chat = Conversation(system: "You are a patient assistant who answers in a few words.")
        let first = try await client.ask(&chat, "What is a queue?")
        #expect(first.cacheN == 0)
        #expect(first.promptN == first.promptTokens)
        #expect(first.promptMs == Double(first.promptTokens) * 2)

        var previous = first
        for turn in 2...4 {
            let reply = try await client.ask(&chat, "And what comes after turn \(turn)?")
            // The previous prompt and its reply (assistant header + words) are cached; only the assistant's end
            // marker and the new question (4 template tokens + 6 words) are computed.
            #expect(reply.cacheN == previous.promptTokens + 3 + previous.completionTokens, "turn \(turn)")
            #expect(reply.promptN == 1 + 4 + 6, "turn \(turn)")
            #expect(reply.promptN + reply.cacheN == reply.promptTokens, "turn \(turn)")
            #expect(reply.cachedTokens == reply.cacheN, "turn \(turn)")
            #expect(reply.promptMs == Double(reply.promptN) * 2, "turn \(turn)")
            previous = reply
        }
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 0, promptTokenMilliseconds: 5)))
    func aCachedPromptIsAnsweredSooner() async throws {
        let client = try SimulatorFixture.current
        let words = (0..<150).map { "word\($0)" }.joined(separator: " ")
        var chat = Conversation(system: words)
        let cold = try await measure { _ = try await client.ask(&chat, "Summarise.") }
        let warm = try await measure { _ = try await client.ask(&chat, "Shorter.") }
        // 150 words + 8 template tokens + 1 at 5 ms each, against about a dozen tokens.
        #expect(cold >= .milliseconds(790), "\(cold)")
        #expect(warm < .milliseconds(400), "\(warm)")
    }

    @Test(.withSimulators(.init(slots: 1, tokenMilliseconds: 0), .init(slots: 1, tokenMilliseconds: 0, cacheEntries: 0)))
    func interleavedConversationsHitThroughTheRAMCache() async throws {
        let (withRAM, withoutRAM) = try SimulatorFixture.pair
        for (client, hits) in [(withRAM, true), (withoutRAM, false)] {
            var a = Conversation(system: "Conversation about rivers and their sources.")
            var b = Conversation(system: "Talk about planets and their orbits, please.")
            let a1 = try await client.ask(&a, "Name one.")
            let b1 = try await client.ask(&b, "Name one.")
            let a2 = try await client.ask(&a, "Another one?")
            let b2 = try await client.ask(&b, "Another one?")
            if hits {
                #expect(a2.cacheN == a1.promptTokens + 3 + a1.completionTokens)
                #expect(b2.cacheN == b1.promptTokens + 3 + b1.completionTokens)
            } else {
                // Only the opening template tokens, which every conversation shares.
                #expect(a2.cacheN == 3)
                #expect(b2.cacheN == 3)
            }
        }
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 0)))
    func cachePromptFalseMisses() async throws {
        let client = try SimulatorFixture.current
        var chat = Conversation(system: "Be brief.")
        _ = try await client.ask(&chat, "One?")
        let uncached = try await client.ask(&chat, "Two?", extra: ["cache_prompt": false])
        #expect(uncached.cacheN == 0)
        #expect(uncached.cachedTokens == 0)
        #expect(uncached.promptN == uncached.promptTokens)
        let cached = try await client.ask(&chat, "Three?", extra: ["cache_prompt": true])
        #expect(cached.cacheN > uncached.promptTokens)
    }

    @Test(.withSimulator(.init(slots: 2, tokenMilliseconds: 0)))
    func idSlotIsHonoured() async throws {
        let client = try SimulatorFixture.current
        var chat = Conversation(system: "Be brief.")
        let first = try await client.ask(&chat, "One?")  // slot 0, the lowest free id
        let body = try chat.ask("Two?", extra: ["id_slot": 1])
        // Slot 1 is empty: nothing cached, though slot 0 holds the conversation.
        let elsewhere = try Reply(try await client.post("/v1/chat/completions", body))
        #expect(elsewhere.cacheN == 0)
        // Slot 0 still holds the first turn; were id_slot ignored, slot 1 (which now holds the whole prompt)
        // would win.
        let back = try Reply(try await client.post("/v1/chat/completions", body.replacingOccurrences(of: #""id_slot":1"#, with: #""id_slot":0"#)))
        #expect(back.cacheN == first.promptTokens + 3 + first.completionTokens)
        // -1 names no slot: both hold the whole prompt now.
        let anywhere = try Reply(try await client.post("/v1/chat/completions", body.replacingOccurrences(of: #""id_slot":1"#, with: #""id_slot":-1"#)))
        #expect(anywhere.cacheN == anywhere.promptTokens - 1)
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 50)))
    func aQueuedRequestFindsTheCacheItsSlotLeft() async throws {
        let client = try SimulatorFixture.current
        var chat = Conversation(system: "Be brief.")
        let body = try chat.ask("Again and again?")
        let replies = try await withThrowingTaskGroup(of: Reply.self) { group in
            for _ in 0..<2 {
                group.addTask { try Reply(try await client.post("/v1/chat/completions", body)) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let stats = try await client.stats()
        #expect(stats["maxQueued"] as? Int == 1)
        #expect(replies.map(\.cacheN).sorted() == [0, replies[0].promptTokens - 1])
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 0)))
    func statsCountPromptAndCachedTokens() async throws {
        let client = try SimulatorFixture.current
        var chat = Conversation(system: "Be brief.")
        let first = try await client.ask(&chat, "One?")
        let second = try await client.ask(&chat, "Two?")
        let stats = try await client.stats()
        #expect(stats["promptTokens"] as? Int == first.promptTokens + second.promptTokens)
        #expect(stats["cachedPromptTokens"] as? Int == second.cacheN)
        #expect(second.cacheN > 0)
        let reset = try json(try await client.post("/sim/reset", ""))
        #expect(reset["promptTokens"] as? Int == 0)
        #expect(reset["cachedPromptTokens"] as? Int == 0)
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 0, promptTokenMilliseconds: 1)))
    func ollamaPromptEvalDurationIsTheUncachedPart() async throws {
        let client = try SimulatorFixture.current
        func send(_ messages: [[String: String]]) async throws -> [String: Any] {
            let body: [String: Any] = ["model": "sim", "messages": messages, "stream": false, "options": ["num_predict": 3]]
            let text = String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
            return try json(try await client.post("/api/chat", text))
        }
        var messages = [["role": "user", "content": "Tell me about caches."]]
        let first = try await send(messages)
        let reply = try #require((first["message"] as? [String: Any])?["content"] as? String)
        messages += [["role": "assistant", "content": reply], ["role": "user", "content": "More."]]
        let second = try await send(messages)
        let count = try #require(first["prompt_eval_count"] as? Int)
        #expect(first["prompt_eval_duration"] as? Int == count * 1_000_000)
        // Computed: the assistant's end marker and the new message (4 + 1 words).
        #expect(second["prompt_eval_count"] as? Int == count + 3 + 3 + 1 + 5)
        #expect(second["prompt_eval_duration"] as? Int == 6 * 1_000_000)
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 0, promptMilliseconds: 40)))
    func byDefaultTheCacheDoesNotChangePromptTime() async throws {
        let client = try SimulatorFixture.current
        var chat = Conversation(system: "Be brief.")
        let first = try await client.ask(&chat, "One?")
        let second = try await client.ask(&chat, "Two?")
        #expect(second.cacheN > 0)
        #expect(first.promptMs == 40)
        #expect(second.promptMs == 40)
    }

    @Test(.withSimulator(.init(slots: 1, tokenMilliseconds: 0)))
    func streamedTimingsCarryTheCache() async throws {
        let client = try SimulatorFixture.current
        var chat = Conversation(system: "Be brief.")
        let first = try await client.ask(&chat, "One?")
        let body = try chat.ask("Two?", extra: ["stream": true])
        let events = try await client.post("/v1/chat/completions", body).text
            .components(separatedBy: "\n\n").filter { $0.hasPrefix("data: {") }
        let last = try json(try #require(events.last).dropFirst("data: ".count))
        let timings = try #require(last["timings"] as? [String: Any])
        #expect(timings["cache_n"] as? Int == first.promptTokens + 3 + first.completionTokens)
    }

    @Test func invalidCacheSettingsNameTheKey() {
        for (configuration, key) in [
            (SimulatorConfiguration(promptTokenMilliseconds: -1), "promptTokenMilliseconds"),
            (SimulatorConfiguration(promptTokenMilliseconds: .infinity), "promptTokenMilliseconds"),
            (SimulatorConfiguration(promptTokenMilliseconds: .nan), "promptTokenMilliseconds"),
            (SimulatorConfiguration(cacheEntries: -1), "cacheEntries"),
        ] {
            do {
                try configuration.validate()
                Issue.record("expected an error for \(key)")
            } catch {
                #expect(error.key == key)
            }
        }
        #expect(throws: Never.self) { try SimulatorConfiguration(promptTokenMilliseconds: 0.5, cacheEntries: 0).validate() }
    }
}
