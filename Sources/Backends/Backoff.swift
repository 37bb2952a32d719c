/// Exponential backoff with jitter: the step doubles from `initial` up to `maximum`, and each
/// wait is a random half to all of its step, so that clients that failed together (workers
/// that lost Redis, requests a backend refused) do not come back together.
public struct Backoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration

    public init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The step after `failures` failures in a row (the first failure waits `initial`).
    public func step(afterFailures failures: Int) -> Duration {
        min(maximum, initial * (1 << min(max(failures, 1) - 1, 20)))
    }

    /// A jittered wait after `failures` failures in a row.
    public func delay(afterFailures failures: Int) -> Duration {
        step(afterFailures: failures) * Double.random(in: 0.5...1.0)
    }
}
