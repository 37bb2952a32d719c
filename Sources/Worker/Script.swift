import LLMQRedis
import NIOConcurrencyHelpers

/// A Lua script run with `EVALSHA`. Its SHA-1 comes from `SCRIPT LOAD` on first use; when the
/// server has lost it (a restart, `SCRIPT FLUSH`), `EVAL` runs it and caches it again.
final class Script: Sendable {
    let source: String
    private let sha1 = NIOLockedValueBox<String?>(nil)

    init(source: String) {
        self.source = source
    }

    /// A script from the bytes of an embedded `.lua` resource.
    convenience init(_ resource: [UInt8]) {
        self.init(source: String(decoding: resource, as: UTF8.self))
    }

    func run(on client: RedisClient, keys: [String], arguments: RedisCommand) async throws(RedisError) -> RESPValue {
        if sha1.withLockedValue({ $0 }) == nil { try await load(on: client) }
        do {
            return try await client.send(command(keys: keys, arguments: arguments))
        } catch where error.isServerError("NOSCRIPT") {
            return try await client.send(evalCommand(keys: keys, arguments: arguments))
        }
    }

    /// The command that runs the script, for callers that pipeline it themselves: `EVALSHA`
    /// once the SHA-1 is known (after a ``run(on:keys:arguments:)`` or ``load(on:)``), else
    /// `EVAL`. A caller that gets `NOSCRIPT` back sends ``evalCommand(keys:arguments:)``.
    func command(keys: [String], arguments: RedisCommand) -> RedisCommand {
        if let sha1 = sha1.withLockedValue({ $0 }) { return command("EVALSHA", sha1, keys, arguments) }
        return evalCommand(keys: keys, arguments: arguments)
    }

    func evalCommand(keys: [String], arguments: RedisCommand) -> RedisCommand {
        command("EVAL", source, keys, arguments)
    }

    /// Loads the script (`SCRIPT LOAD`), so that ``command(keys:arguments:)`` can use `EVALSHA`.
    func load(on client: RedisClient) async throws(RedisError) {
        guard let sha1 = try await client.send("SCRIPT", "LOAD", source).string else {
            throw RedisError(.unexpectedReply, "SCRIPT LOAD")
        }
        self.sha1.withLockedValue { $0 = sha1 }
    }

    private func command(_ name: String, _ script: String, _ keys: [String], _ arguments: RedisCommand) -> RedisCommand {
        var command = RedisCommand(name, script, String(keys.count))
        for key in keys { command.append(key) }
        command.append(contentsOf: arguments)
        return command
    }
}

/// The worker's Lua scripts. Each lives in `Sources/Worker/Scripts/`, where its header says
/// what it takes and returns; SwiftPM embeds the files in the binary (`.embedInCode`), so the
/// release binary needs no resource bundle beside it.
enum Scripts {
    /// Publishes a reply and acknowledges its request in one step (`reply.lua`); its KEYS and
    /// ARGV are ``ReplyScriptArguments``, its answer a ``RequestStream/ReplyResult``.
    static let reply = Script(PackageResources.reply_lua)

    /// Writes a streamed answer's chunks while this consumer owns the entry (`chunks.lua`).
    static let chunks = Script(PackageResources.chunks_lua)

    /// `XAUTOCLAIM` with each entry's delivery count, marking deleted entries lost
    /// (`claim.lua`); its answer is a ``ClaimScriptReply``.
    static let claim = Script(PackageResources.claim_lua)

    /// Refreshes the entries still pending on this consumer, returns those another took (`touch.lua`).
    static let touch = Script(PackageResources.touch_lua)

    /// Removes idle consumers with nothing pending (`delete_idle_consumers.lua`).
    static let deleteIdleConsumers = Script(PackageResources.delete_idle_consumers_lua)

    /// The pool's slot leases (``PoolSlotLedger``): take (`slots_acquire.lua`), extend
    /// (`slots_renew.lua`) and give back (`slots_release.lua`).
    static let acquireSlots = Script(PackageResources.slots_acquire_lua)
    static let renewSlots = Script(PackageResources.slots_renew_lua)
    static let releaseSlots = Script(PackageResources.slots_release_lua)

    /// Fair intake (``FairIntake``): stage and take user by user (`fair_take.lua`), end a
    /// user's request (`fair_release.lua`), keep the marks fresh (`fair_renew.lua`).
    static let fairTake = Script(PackageResources.fair_take_lua)
    static let fairRelease = Script(PackageResources.fair_release_lua)
    static let fairRenew = Script(PackageResources.fair_renew_lua)

    /// A conversation's home backend, with bounded loads (`affinity_home.lua`).
    static let affinityHome = Script(PackageResources.affinity_home_lua)
}
