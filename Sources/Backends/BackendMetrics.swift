import Metrics

/// How often conversations went to their home backend (`llmq_affinity_requests_total`).
struct AffinityMetrics: Sendable {
    /// Requests that went to the backend holding their conversation's prefix.
    let home = Counter(label: "llmq_affinity_requests_total", dimensions: [("result", "home")])
    /// Requests whose home was full (or gone), which went elsewhere.
    let elsewhere = Counter(label: "llmq_affinity_requests_total", dimensions: [("result", "elsewhere")])
}

/// The backend metrics (swift-metrics; `llmq worker` exports them to Prometheus), one set of
/// handles per backend, made once (see `LabelledMetrics` in the worker for why).
final class BackendMetrics: Sendable {
    enum Result: String {
        case ok
        case transientError = "transient_error"
        case permanentError = "permanent_error"
    }

    private let attempts: [Result: Counter]
    private let retries: Counter
    private let fallbacks: Counter

    init(backend: String) {
        var attempts: [Result: Counter] = [:]
        for result in [Result.ok, .transientError, .permanentError] {
            attempts[result] = Counter(label: "llmq_backend_attempts_total", dimensions: [("backend", backend), ("result", result.rawValue)])
        }
        self.attempts = attempts
        retries = Counter(label: "llmq_backend_retries_total", dimensions: [("backend", backend)])
        fallbacks = Counter(label: "llmq_fallbacks_total", dimensions: [("backend", backend)])
    }

    func attempt(_ result: Result) {
        attempts[result]?.increment()
    }

    func retry() {
        retries.increment()
    }

    func fallback() {
        fallbacks.increment()
    }
}
