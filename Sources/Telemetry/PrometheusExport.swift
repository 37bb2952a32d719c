import CoreMetrics
import Prometheus

/// A swift-metrics factory that registers every metric in a Prometheus registry with its help
/// text and histogram buckets from ``MetricsCatalogue``.
///
/// swift-prometheus' own `PrometheusMetricsFactory` registers metrics without help text, and
/// Prometheus' linter (`promtool check metrics`) rejects a family without `# HELP`.
public struct PrometheusExport: MetricsFactory {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    /// The exposition text of every metric, as `/metrics` serves it.
    public func render() -> [UInt8] {
        registry.emitToBuffer()
    }

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: MetricsCatalogue.help(for: label))
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(
            descriptor: descriptor(label), labels: dimensions, buckets: MetricsCatalogue.valueBuckets(for: label))
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(
            descriptor: descriptor(label), labels: dimensions, buckets: MetricsCatalogue.durationBuckets(for: label))
    }

    public func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyRecorder(_ handler: any RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
        if let histogram = handler as? ValueHistogram { registry.unregisterValueHistogram(histogram) }
    }

    public func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    public func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}

/// Every metric llmq exports, with its help text. The README's metrics table and
/// `deploy/metrics.txt` (which the dashboard and alert rules are checked against) list the same.
public enum MetricsCatalogue {
    /// Name and help text of each metric, in the order the README lists them.
    public static let entries: [(name: String, help: String)] = [
        ("llmq_replies_total", "Replies written, by status (ok, error), error_code (empty for ok), backend (empty when no backend was asked) and queue."),
        ("llmq_requests_in_flight", "Requests this worker is running now."),
        ("llmq_concurrency_limit", "Requests this worker runs at once at most (concurrency)."),
        ("llmq_queue_wait_seconds", "Time from publishing a request (its entry ID) to a worker claiming it."),
        ("llmq_backend_duration_seconds", "Time spent in the backend per request, retries and fallback included, by backend (the primary)."),
        ("llmq_overhead_seconds", "llmq's own time per request: from claim to reply written, minus the backend's time."),
        ("llmq_backend_first_token_seconds", "Streamed requests: time from sending the answering call to its first text, by backend."),
        ("llmq_stream_chunks_total", "Entries written to chunk streams of streamed requests (text, resets and the last chunk)."),
        ("llmq_backend_attempts_total", "Calls to a backend, by backend and result (ok, transient_error, permanent_error)."),
        ("llmq_backend_retries_total", "Calls to a backend that repeated a failed call, by backend."),
        ("llmq_pool_slots_held", "Pool slot leases held now across every worker, by backend (slots.pool); every worker exports the same value: take max."),
        ("llmq_queue_users_waiting", "Under fair intake (users.fair), users with requests waiting for their turn; every worker exports the same value: take max."),
        ("llmq_affinity_requests_total", "Requests continuing a conversation: result home went to the backend holding its prefix, elsewhere found it full."),
        ("llmq_fallbacks_total", "Requests sent to the fallback backend after the primary failed or its circuit was open, by backend (the fallback)."),
        ("llmq_backend_circuit_open", "1 while the backend's circuit breaker is open or half-open, 0 when closed, by backend."),
        ("llmq_backend_prompt_tokens_total", "Prompt tokens the backend reported, by backend."),
        ("llmq_backend_completion_tokens_total", "Completion tokens the backend reported, by backend."),
        ("llmq_claims_total", "Entries this worker took over from consumers that left them idle (XAUTOCLAIM)."),
        ("llmq_dead_letters_total", "Entries this worker moved to the dead-letter stream after too many deliveries."),
        ("llmq_lease_losses_total", "Entries in flight on this worker that another consumer claimed meanwhile."),
        ("llmq_slot_lease_losses_total", "Pool slot leases of this worker that expired before it renewed them (a stalled worker)."),
        ("llmq_redis_reconnects_total", "Redis connections this worker established again after losing one."),
        ("llmq_reply_retries_total", "Runs of the reply script repeated after a Redis error."),
        ("llmq_reply_replication_short_total", "Replies written that fewer than redis.waitReplicas replicas had acknowledged within redis.waitTimeoutMs (WAIT)."),
        ("llmq_consumers_deleted_total", "Idle consumers with nothing pending that this worker removed from the group."),
        ("llmq_ready", "1 while this worker is ready (Redis reachable, group present, backend usable), else 0."),
        ("llmq_queue_length", "Entries in the request stream: requests not yet answered. Read from Redis by every worker; aggregate with max."),
        ("llmq_queue_lag", "Entries not yet delivered to any consumer (XINFO GROUPS lag), the KEDA scaling input. Aggregate with max."),
        ("llmq_queue_pending", "Entries delivered and not yet acknowledged (XPENDING). Aggregate with max."),
        ("llmq_queue_consumers", "Consumers in the group. Aggregate with max."),
        ("llmq_queue_oldest_pending_age_seconds", "Age of the oldest pending entry, 0 when none. Aggregate with max."),
    ]

    private static let helpByName = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0.help) })

    /// The help text of a metric; a metric missing from the catalogue still gets one, naming it.
    public static func help(for name: String) -> String {
        helpByName[name] ?? "llmq metric \(name)."
    }

    /// Buckets per histogram: queue waits run from milliseconds to many minutes, backend calls
    /// from tens of milliseconds to minutes, llmq's own time from tenths of milliseconds.
    static func durationBuckets(for name: String) -> [Duration] {
        let seconds: [Double] =
            switch name {
            case "llmq_overhead_seconds": [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
            case "llmq_backend_duration_seconds": [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300]
            case "llmq_backend_first_token_seconds": [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
            default: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]
            }
        return seconds.map { .nanoseconds(Int64($0 * 1e9)) }
    }

    static func valueBuckets(for name: String) -> [Double] {
        [1, 10, 100, 1000, 10_000, 100_000]
    }
}
