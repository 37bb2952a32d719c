import LLMQRedis
import Testing

@Suite("Redis errors by kind")
struct RedisErrorTests {
    @Test("The server's state is transient, the command's fault is not; a broken connection is transient")
    func kinds() {
        for message in [
            "OOM command not allowed when used memory > 'maxmemory'.", "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
            "READONLY You can't write against a read only replica.", "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down", "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "NOREPLICAS Not enough good replicas to write.",
        ] {
            #expect(RedisError(.server, message).isTransient, "\(message)")
        }
        for message in [
            "WRONGTYPE Operation against a key holding the wrong kind of value", "ERR unknown command", "BUSYGROUP Consumer Group name already exists",
            "BUSYKEY Target key name already exists.", "NOSCRIPT No matching script.", "NOGROUP No such key", "CROSSSLOT Keys in request don't hash to the same slot",
        ] {
            #expect(!RedisError(.server, message).isTransient, "\(message)")
        }
        #expect(RedisError(.connection, "server closed the connection").isTransient)
        #expect(!RedisError(.authentication, "WRONGPASS").isTransient)
        #expect(!RedisError(.shutdown, "").isTransient)
    }

    @Test("A WRONGTYPE error from llmq's scripts names its key")
    func wrongTypeKey() {
        #expect(RedisError(.server, "WRONGTYPE key llmq:replies holds a string, not a stream: no reply can be written").wrongTypeKey == "llmq:replies")
        #expect(RedisError(.server, "WRONGTYPE Operation against a key holding the wrong kind of value").wrongTypeKey == nil)
        #expect(RedisError(.connection, "WRONGTYPE key x").wrongTypeKey == nil)
    }
}
