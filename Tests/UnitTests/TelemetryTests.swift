import Foundation
import LLMQBackends
@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
import LLMQTelemetry
import LLMQTestSupport
@testable import LLMQWorker
import Logging
import Synchronization
import Testing

@Suite("Telemetry units: JSON log lines, liveness bounds, the metrics catalogue")
struct TelemetryUnitTests {
    @Test("A JSON log line is one valid object with timestamp, level, label, message and the metadata; hostile text stays inside its string")
    func jsonLogLine() throws {
        let lines = Mutex<[String]>([])
        var handler = JSONLogHandler(label: "llmq") { line in lines.withLock { $0.append(line) } }
        handler.logLevel = .debug
        handler[metadataKey: "llmq.consumer"] = "w-1"
        let logger = Logger(label: "llmq") { _ in handler }
        logger.warning("quote \" backslash \\ newline \n tab \t bell \u{07} done", metadata: [
            "llmq.request.entry": "1-0", "message": "collides", "llmq.list": ["a", "b"], "llmq.map": ["k": "v"],
        ])
        logger.trace("below the level")

        let written = lines.withLock { $0 }
        #expect(written.count == 1)
        let line = try #require(written.first)
        #expect(line.hasSuffix("}\n") && line.dropLast().firstIndex(of: "\n") == nil, "one line: \(line)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["message"] as? String == "quote \" backslash \\ newline \n tab \t bell \u{07} done")
        #expect(object["level"] as? String == "warning")
        #expect(object["label"] as? String == "llmq")
        #expect(object["llmq.consumer"] as? String == "w-1")
        #expect(object["llmq.request.entry"] as? String == "1-0")
        #expect(object["metadata.message"] as? String == "collides")
        #expect(object["llmq.list"] as? [String] == ["a", "b"])
        #expect(object["llmq.map"] as? [String: String] == ["k": "v"])
        let timestamp = try #require(object["timestamp"] as? String)
        #expect(timestamp.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil, "RFC 3339 UTC: \(timestamp)")
    }

    @Test("Liveness fails only when one wait outlasts its own bound; readiness names what is missing")
    func livenessBounds() {
        var configuration = WorkerConfiguration(consumer: "c")
        configuration.readBlock = .seconds(2)
        configuration.redis.commandTimeout = .seconds(10)
        configuration.backend.requestTimeout = .seconds(100)
        configuration.retry.maxAttempts = 2
        configuration.retry.maxBackoff = .seconds(5)
        let health = WorkerHealth(configuration: configuration)
        #expect(health.readiness(circuitOpenWithoutFallback: false).detail.contains("Redis"), "not connected yet")
        health.redisSucceeded(groupReady: true)
        let now = ContinuousClock.now

        health.enter(.working)
        #expect(health.liveness(at: now + .seconds(41)).isHealthy)  // 2 + 10 + 30 s
        #expect(!health.liveness(at: now + .seconds(43)).isHealthy)

        health.enter(.waitingForSlot)  // (100 + 5) × 2 + 60 s
        #expect(health.liveness(at: now + .seconds(260)).isHealthy)
        #expect(!health.liveness(at: now + .seconds(280)).isHealthy)
        // Slots held by replies waiting for Redis: alive for as long as Redis is away.
        health.redisFailed("connection refused")
        #expect(health.liveness(at: now + .seconds(3600)).isHealthy)
        #expect(health.readiness(circuitOpenWithoutFallback: false).detail == "Redis unreachable: connection refused")

        health.redisSucceeded(groupReady: true)
        #expect(!health.liveness(at: now + .seconds(3600)).isHealthy)
        #expect(health.readiness(circuitOpenWithoutFallback: false) == (true, "ready"))
        #expect(!health.readiness(circuitOpenWithoutFallback: true).isReady)
        health.markStopping()
        #expect(health.readiness(circuitOpenWithoutFallback: false) == (false, "stopping"))
    }

    @Test("Every metric has one catalogue entry with help text")
    func catalogue() {
        let names = MetricsCatalogue.entries.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { $0.hasPrefix("llmq_") })
        #expect(MetricsCatalogue.entries.allSatisfy { !$0.help.isEmpty })
        #expect(names.filter { $0.hasSuffix("_total") }.count >= 10)
    }

    @Test("deploy/metrics.txt, which the dashboard and alert rules are checked against, lists exactly the catalogue")
    func deployListMatchesCatalogue() throws {
        let text = try String(contentsOf: packageRoot.appendingPathComponent("deploy/metrics.txt"), encoding: .utf8)
        let listed = Set(text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") })
        #expect(listed == Set(MetricsCatalogue.entries.map(\.name)))
    }
}
