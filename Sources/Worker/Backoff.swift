import LLMQConfiguration
import LLMQContract

/// Exponential backoff with jitter for retrying Redis: doubling from the first step up to
/// `maximum`, each wait a random half to all of its step, so that workers that lost Redis
/// together do not come back together.
struct Backoff: Sendable {
    /// Redis retries: at most 5 s between tries.
    static let redis = Backoff(maximum: .seconds(5))

    var maximum: Duration

    func delay(afterFailures failures: Int, initial: Duration) -> Duration {
        min(maximum, initial * (1 << min(max(failures, 1) - 1, 7))) * Double.random(in: 0.5...1.0)
    }
}
