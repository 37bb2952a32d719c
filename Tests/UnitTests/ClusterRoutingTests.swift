import Foundation
@testable import LLMQRedis
import Testing

@Suite("Hash slots")
struct HashSlotTests {
    @Test("CRC16 (XMODEM) mod 16384, with the cluster specification's hash tag rules")
    func knownSlots() {
        // The specification's check value: CRC16("123456789") = 0x31C3.
        #expect(HashSlot.of("123456789") == 0x31C3)
        #expect(HashSlot.of("foo") == 12182)
        #expect(HashSlot.of("") == 0)
        // Hash tags: the first {...} with something in it.
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("user1000"))
        #expect(HashSlot.of("{user1000}.followers") == HashSlot.of("{user1000}.following"))
        #expect(HashSlot.of("foo{}{bar}") != HashSlot.of("bar"), "an empty first tag hashes the whole key")
        #expect(HashSlot.of("foo{{bar}}zap") == HashSlot.of("{bar"))
        #expect(HashSlot.of("foo{bar}{zap}") == HashSlot.of("bar"))
        #expect(HashSlot.of("{llmq}:requests") == HashSlot.of("{llmq}:replies"))
        #expect(HashSlot.tag(of: "{llmq}:requests") == "llmq")
        #expect(HashSlot.tag(of: "llmq:requests") == nil)
    }

    @Test("Routing picks each command's key: first argument, XGROUP/XINFO's second, EVALSHA's first key, XREADGROUP's first stream")
    func routingKeys() {
        #expect(ClusterRouting.slot(of: RedisCommand("XADD", "{a}:r", "*", "f", "v")) == HashSlot.of("a"))
        #expect(ClusterRouting.slot(of: RedisCommand("XGROUP", "CREATE", "{b}:r", "g", "0")) == HashSlot.of("b"))
        #expect(ClusterRouting.slot(of: RedisCommand("EVALSHA", "abc", "2", "{c}:x", "{c}:y", "arg")) == HashSlot.of("c"))
        #expect(ClusterRouting.slot(of: RedisCommand("EVALSHA", "abc", "0", "arg")) == nil)
        #expect(ClusterRouting.slot(of: RedisCommand("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "{d}:r", ">")) == HashSlot.of("d"))
        #expect(ClusterRouting.slot(of: RedisCommand("WAIT", "1", "100")) == nil)
        #expect(ClusterRouting.slot(of: RedisCommand("SCRIPT", "LOAD", "return 1")) == nil)
    }
}
