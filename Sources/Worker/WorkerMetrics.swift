import LLMQClient
import LLMQConfiguration
import LLMQContract
import Metrics
import NIOConcurrencyHelpers

/// What a worker records, through swift-metrics: `llmq worker` exports it to Prometheus
/// (`metrics.port`); without a metrics backend every call is a no-op. Names and help texts are
/// listed in `MetricsCatalogue` (LLMQTelemetry) and the README.
struct WorkerMetrics: Sendable {
    let inFlight = Gauge(label: "llmq_requests_in_flight")
    let concurrencyLimit = Gauge(label: "llmq_concurrency_limit")
    let queueWait = Timer(label: "llmq_queue_wait_seconds")
    let overhead = Timer(label: "llmq_overhead_seconds")
    let claims = Counter(label: "llmq_claims_total")
    let deadLetters = Counter(label: "llmq_dead_letters_total")
    let leaseLosses = Counter(label: "llmq_lease_losses_total")
    let slotLeaseLosses = Counter(label: "llmq_slot_lease_losses_total")
    let replyRetries = Counter(label: "llmq_reply_retries_total")
    let consumersDeleted = Counter(label: "llmq_consumers_deleted_total")
    let streamChunks = Counter(label: "llmq_stream_chunks_total")
    let ready = Gauge(label: "llmq_ready")
    /// One set of queue gauges per queue served, in the configuration's order.
    let queues: [QueueGauges]
    /// Pool slot leases held now, by backend, across every worker (`slots.pool`): as the queue
    /// gauges, every worker exports the same value.
    let poolSlotsHeld: [String: Gauge]

    /// The queue as Redis reports it. Every worker reads and exports the same values, labelled
    /// by stream and group only, so a dashboard takes `max by (stream, group)`, never a sum.
    struct QueueGauges: Sendable {
        let length: Gauge
        let lag: Gauge
        let pending: Gauge
        let consumers: Gauge
        let oldestPendingAge: Gauge
        let usersWaiting: Gauge

        init(streams: WorkerConfiguration.Streams) {
            let labels = [("stream", streams.requests), ("group", streams.group)]
            length = Gauge(label: "llmq_queue_length", dimensions: labels)
            lag = Gauge(label: "llmq_queue_lag", dimensions: labels)
            pending = Gauge(label: "llmq_queue_pending", dimensions: labels)
            consumers = Gauge(label: "llmq_queue_consumers", dimensions: labels)
            oldestPendingAge = Gauge(label: "llmq_queue_oldest_pending_age_seconds", dimensions: labels)
            usersWaiting = Gauge(label: "llmq_queue_users_waiting", dimensions: labels)
        }

        func record(_ status: QueueStatus) {
            length.record(status.length)
            lag.record(status.lagOrEstimate)
            pending.record(status.pending)
            consumers.record(status.consumers.count)
            oldestPendingAge.record(Double(status.oldestPending?.ageMilliseconds ?? 0) / 1000)
            if let waiting = status.usersWaiting { usersWaiting.record(waiting) }
        }
    }

    init(configuration: WorkerConfiguration, queues: [WorkerConfiguration.Queue]) {
        self.queues = queues.map { queue in
            var streams = configuration.streams
            streams.requests = queue.stream
            return QueueGauges(streams: streams)
        }
        poolSlotsHeld = configuration.slots.pool
            ? Dictionary(uniqueKeysWithValues: configuration.backendNames.map { ($0, Gauge(label: "llmq_pool_slots_held", dimensions: [("backend", $0)])) })
            : [:]
        concurrencyLimit.record(configuration.concurrency)
        inFlight.record(0)
        ready.record(0)
    }

    private let replies = LabelledMetrics<Counter> { Counter(label: "llmq_replies_total", dimensions: $0) }
    private let backendDurations = LabelledMetrics<Timer> { Timer(label: "llmq_backend_duration_seconds", dimensions: $0) }
    private let firstTokens = LabelledMetrics<Timer> { Timer(label: "llmq_backend_first_token_seconds", dimensions: $0) }
    private let promptTokens = LabelledMetrics<Counter> { Counter(label: "llmq_backend_prompt_tokens_total", dimensions: $0) }
    private let completionTokens = LabelledMetrics<Counter> { Counter(label: "llmq_backend_completion_tokens_total", dimensions: $0) }

    /// Counts a reply written to Redis; the labels are the reply's own fields and its queue.
    func replied(_ reply: Reply, queue: String) {
        replies[[("status", reply.status), ("error_code", reply.errorCode), ("backend", reply.backend), ("queue", queue)]].increment()
    }

    /// Time in the backend for one request, by the backend named in its reply.
    func backendTime(_ duration: Duration, backend: String) {
        backendDurations[[("backend", backend)]].recordNanoseconds(duration.nanoseconds)
    }

    func firstToken(milliseconds: Double, backend: String) {
        firstTokens[[("backend", backend)]].recordNanoseconds(Int64(milliseconds * 1_000_000))
    }

    func tokens(prompt: Int?, completion: Int?, backend: String) {
        if let prompt, prompt > 0 { promptTokens[[("backend", backend)]].increment(by: prompt) }
        if let completion, completion > 0 { completionTokens[[("backend", backend)]].increment(by: completion) }
    }
}

/// One metric's handles by label values, made once each: creating a swift-metrics handle asks
/// the metrics backend to look it up (a lock and a hash of the labels in swift-prometheus),
/// which per reply was measurable at thousands of replies per second.
final class LabelledMetrics<Handle: AnyObject & Sendable>: Sendable {
    private let make: @Sendable ([(String, String)]) -> Handle
    private let handles = NIOLockedValueBox<[[String]: Handle]>([:])

    init(_ make: @escaping @Sendable ([(String, String)]) -> Handle) {
        self.make = make
    }

    subscript(labels: [(String, String)]) -> Handle {
        let key = labels.map(\.1)
        if let handle = handles.withLockedValue({ $0[key] }) { return handle }
        let handle = make(labels)
        return handles.withLockedValue { handles in
            if let existing = handles[key] { return existing }
            handles[key] = handle
            return handle
        }
    }
}

extension Duration {
    /// Whole nanoseconds, saturating (for timers).
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}
