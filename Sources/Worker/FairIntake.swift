import LLMQConfiguration
import LLMQRedis

/// Fair intake (`users.fair`): a queue's users are served in turn by the whole pool, as
/// BullMQ Pro's groups serve jobs.
///
/// New entries are read into the group under one staging consumer
/// (``WorkerConfiguration/Users/stagingConsumer``), so they are pending, safe and counted as
/// pending by every tool, and their IDs wait in Redis in a list per user. A worker with a free
/// slot takes the next user's next entry (``Scripts/fairTake``), moving it to itself with its
/// delivery count unchanged; from there it is a request like any other: refreshed while it
/// runs, answered and acknowledged by the reply script, claimed by another worker if this one
/// dies. Every worker runs the same scripts on the same keys, so the turns and limits are the
/// pool's, not one worker's.
///
/// Keys, beside the request stream `S` (so in its cluster slot): `S:fair:users` (users with
/// entries waiting, by turn), `S:fair:turn`, `S:fair:waiting:<user>` (entry IDs),
/// `S:fair:running:<user>` (entries in flight, scored by when their mark expires),
/// `S:fair:busy` (users with entries in flight), `S:fair:rate:<user>` (the request budget).
struct FairIntake: Sendable {
    let users: WorkerConfiguration.Users
    /// A running mark its worker stops renewing expires after this (the claim idle time: by
    /// then another worker may claim the entry).
    let markLifetime: Duration
    /// Pages of 1,000 waiting entries one renewal refreshes, at most: 50,000 entries per
    /// worker every third of the claim idle time.
    static let renewPages = 50
    /// New entries staged per take, at most.
    static let stageBatch = 500
    /// A take's answer when entries wait only behind a user limit: ask again this soon.
    static let heldBackRetry: Duration = .milliseconds(100)

    static func prefix(of requests: String) -> String { requests + ":fair:" }

    /// What one take got.
    struct Take: Sendable {
        var deliveries: [RequestStream.Delivery]
        /// Entries left waiting because their user is at a limit.
        var heldBack: Int
        /// The group's last delivered ID after staging: anything after it is new.
        var lastDelivered: String
    }
}

extension RequestStream {
    /// Stages the new entries of `requests` and takes up to `count` of them, user by user.
    func takeFair(from requests: String, count: Int, intake: FairIntake) async throws(RedisError) -> FairIntake.Take {
        let reply = try await Scripts.fairTake.run(
            on: writer, keys: [requests],
            arguments: RedisCommand(
                streams.group, consumer, WorkerConfiguration.Users.stagingConsumer, FairIntake.prefix(of: requests),
                String(count), String(FairIntake.stageBatch), String(intake.users.maxInFlight),
                String(intake.users.requestsPerMinute), String(intake.markLifetime.milliseconds),
                lostMarker(requests, ""), String(Self.lostMarkerLifetime.milliseconds)))
        let decoded = try FairTakeReply(decoding: reply)
        var deliveries = decoded.entries.map {
            Delivery(stream: requests, entry: $0.entry, deliveries: $0.deliveries, removedFromGroup: false, user: $0.user.isEmpty ? nil : $0.user)
        }
        for id in decoded.deleted {
            deliveries.append(Delivery(stream: requests, entry: StreamEntry(id: id, fields: nil), deliveries: 1, removedFromGroup: true))
        }
        return FairIntake.Take(deliveries: deliveries, heldBack: decoded.heldBack, lastDelivered: decoded.lastDelivered)
    }

    /// The requests of these users ended: each user has one fewer in flight.
    func releaseFair(_ ended: [(user: String, id: String)], on requests: String) async throws(RedisError) {
        guard !ended.isEmpty else { return }
        var arguments = RedisCommand(FairIntake.prefix(of: requests))
        for (user, id) in ended {
            arguments.append(user)
            arguments.append(id)
        }
        _ = try await Scripts.fairRelease.run(on: writer, keys: [requests], arguments: arguments)
    }

    /// Renews this worker's running marks on `requests` and keeps its waiting entries from
    /// looking abandoned (``Scripts/fairRenew``), a page of 1,000 at a time, up to
    /// ``FairIntake/renewPages`` pages. A backlog beyond that, waiting longer than the claim
    /// idle time, is claimed out of turn (answered once, not in turn).
    func renewFair(_ running: [(user: String, id: String)], on requests: String, intake: FairIntake, idleThreshold: Duration) async throws(RedisError) {
        var marks = running[...]
        for _ in 0..<FairIntake.renewPages {
            var arguments = RedisCommand(
                streams.group, WorkerConfiguration.Users.stagingConsumer, FairIntake.prefix(of: requests),
                String(intake.markLifetime.milliseconds), String(idleThreshold.milliseconds))
            for (user, id) in marks {
                arguments.append(user)
                arguments.append(id)
            }
            marks = []
            let seen = try await Scripts.fairRenew.run(on: writer, keys: [requests], arguments: arguments)
            guard try seen.decodeInt("fair renew script", "reply") >= 1000 else { return }
        }
    }
}

/// What the fair take script (``Scripts/fairTake``) answers:
/// `{{{id, fields, deliveries, user}...}, {deleted ID...}, held back, last delivered ID}`.
struct FairTakeReply: Sendable {
    var entries: [(entry: StreamEntry, deliveries: Int, user: String)]
    var deleted: [String]
    var heldBack: Int
    var lastDelivered: String

    init(decoding reply: RESPValue) throws(RedisError) {
        let command = "fair take script"
        let parts = try reply.decodeArray(command, "reply")
        guard parts.count == 4 else { throw .unexpectedReply(command, "reply has \(parts.count) elements, not 4") }
        entries = []
        for (index, item) in try parts[0].decodeArray(command, "taken entries").enumerated() {
            let row = try item.decodeArray(command, "taken entry \(index + 1)")
            guard row.count == 4 else {
                throw .unexpectedReply(command, "taken entry \(index + 1) has \(row.count) elements, not 4")
            }
            let entry = try StreamEntry(decoding: .array([row[0], row[1]]), command: command)
            let deliveries = try row[2].decodeInt(command, "delivery count of \(entry.id)")
            guard deliveries >= 1 else { throw .unexpectedReply(command, "delivery count of \(entry.id) is \(deliveries)") }
            entries.append((entry, deliveries, try row[3].decodeString(command, "user of \(entry.id)")))
        }
        deleted = try parts[1].decodeStrings(command, "deleted IDs")
        heldBack = try parts[2].decodeInt(command, "held back")
        lastDelivered = try parts[3].decodeString(command, "last delivered ID")
    }
}
