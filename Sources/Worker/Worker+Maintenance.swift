import Foundation
import LLMQBackends
import LLMQClient
import LLMQRedis
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

// Maintenance beside the read loop: keeping entries in flight ours, the queue gauges, and
// removing idle consumers from the group.
extension Worker {
    /// Every third of the claim idle time, resets the idle time of the entries in flight.
    func refreshLoop() async {
        let interval = configuration.recovery.claimMinIdle / 3
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            if let lease {
                do {
                    if try await !lease.renew(on: stream.writer) {
                        logger.error("another worker holds this worker's consumer name now; stop one of them", metadata: [
                            "llmq.consumer": "\(lease.name)"
                        ])
                    }
                } catch {
                    logger.debug("could not renew the consumer name lease", metadata: ["llmq.error": "\(error)"])
                }
            }
            if let fairIntake { await renewFairMarks(fairIntake, idleThreshold: interval * 1.5) }
            let keys = inFlight.withLockedValue { $0 }
            guard !keys.isEmpty else { continue }
            do {
                var lost: [(String, [String])] = []
                for (requests, entries) in Dictionary(grouping: keys.keys, by: \.stream) {
                    let claimed = try await stream.touch(entries.map(\.id), on: requests)
                    if !claimed.isEmpty { lost.append((requests, claimed)) }
                }
                if !lost.isEmpty {
                    metrics.leaseLosses.increment(by: lost.reduce(0) { $0 + $1.1.count })
                    logger.warning("entries in flight were claimed by another consumer; their work stops here", metadata: [
                        "llmq.count": "\(lost.reduce(0) { $0 + $1.1.count })"
                    ])
                }
                // The consumer that claimed them answers them: stop their backend calls and
                // chunk writes now, not when they end.
                for (requests, ids) in lost {
                    for id in ids { inFlight.withLockedValue { $0[EntryKey(stream: requests, id: id)] }?.cancel(.leaseLost) }
                }
            } catch {
                logger.warning("could not refresh entries in flight", metadata: ["llmq.error": "\(error)"])
            }
        }
    }

    /// Renews the running marks of this worker's fair requests, and refreshes the entries
    /// waiting in every fair queue, which no worker owns yet (each worker does, so any one alive
    /// keeps them from looking abandoned).
    private func renewFairMarks(_ intake: FairIntake, idleThreshold: Duration) async {
        let running = fairUsers.withLockedValue { $0 }
        for queue in queues {
            let marks = running.filter { $0.key.stream == queue.stream }.map { (user: $0.value, id: $0.key.id) }
            do {
                try await stream.renewFair(marks, on: queue.stream, intake: intake, idleThreshold: idleThreshold)
            } catch {
                logger.warning("could not renew the fair queue's marks", metadata: ["llmq.error": "\(error)"])
            }
        }
    }

    /// Every third of the lease duration, extends the pool slot leases this worker holds, and
    /// asks a llama-server that did not say how many slots it has (it was not up yet when the
    /// worker started, as when compose starts them together) until it says: until then the
    /// pool cannot share its slots.
    func slotLeaseLoop(_ ledger: PoolSlotLedger) async {
        let interval = ledger.leaseDuration / 3
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            if backend.lacksSlots { await backend.discoverSlots(openWhenDown: false) }
            do {
                let lost = try await ledger.renew()
                if lost > 0 {
                    metrics.slotLeaseLosses.increment(by: lost)
                    logger.warning("pool slot leases expired before they were renewed (was this worker stalled?); their calls go on", metadata: [
                        "llmq.count": "\(lost)"
                    ])
                }
            } catch {
                logger.warning("could not renew the pool slot leases", metadata: ["llmq.error": "\(error)"])
            }
        }
    }

    /// Reads the queue's length, lag and pending entries for the gauges, every
    /// `metrics.queueInterval`.
    func queueGaugeLoop() async {
        while !Task.isCancelled {
            do {
                for (index, (queue, gauges)) in zip(configuration.effectiveQueues, metrics.queues).enumerated() {
                    var streams = configuration.streams
                    streams.requests = queue.stream
                    // The pool's slots are the same for every queue: read with the first.
                    let backends = index == 0 ? Array(metrics.poolSlotsHeld.keys) : []
                    let status = try await QueueStatus.read(from: stream.writer, streams: streams, backends: backends, fairUsers: fairIntake != nil)
                    gauges.record(status)
                    for (backend, held) in status.poolSlotsHeld ?? [:] { metrics.poolSlotsHeld[backend]?.record(held) }
                }
            } catch {
                logger.debug("could not read the queue gauges", metadata: ["llmq.error": "\(error)"])
            }
            _ = readiness()
            do {
                try await Task.sleep(for: configuration.metrics.queueInterval)
            } catch {
                return
            }
        }
    }

    /// Removes consumers idle for `idle` with nothing pending, which scaled-down or killed
    /// workers leave behind; checks a quarter as often as the threshold, between 1 s and 1 min.
    func tidyLoop(idle: Duration) async {
        let interval = min(.seconds(60), max(.seconds(1), idle / 4))
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval * Double.random(in: 0.75...1.25))
            } catch {
                return
            }
            do {
                var removed: [String] = []
                for queue in queues {
                    removed += try await stream.deleteIdleConsumers(on: queue.stream, minIdle: idle)
                }
                if !removed.isEmpty {
                    metrics.consumersDeleted.increment(by: removed.count)
                    logger.info("removed idle consumers with nothing pending from the group", metadata: [
                        "llmq.count": "\(removed.count)", "llmq.consumers": "\(removed.joined(separator: ","))",
                    ])
                }
            } catch {
                logger.debug("could not tidy idle consumers", metadata: ["llmq.error": "\(error)"])
            }
        }
    }

    /// On a clean stop, a worker with nothing pending leaves the group, so that scaling down
    /// leaves no names behind. With entries still pending it stays: they must be claimed.
    func removeSelfFromGroup() async {
        guard configuration.recovery.deleteIdleConsumersAfter != nil else { return }
        for queue in queues {
            if (try? await stream.deleteIdleConsumers(on: queue.stream, minIdle: .zero, only: configuration.consumer))?.isEmpty == false {
                logger.debug("left the consumer group", metadata: ["llmq.stream": "\(queue.stream)"])
            }
        }
    }
}
