import LLMQBackends
import LLMQConfiguration
import Logging

extension ResilientBackend {
    /// The backend pool a configuration names: `backends` (or the one `backend`), then
    /// `fallbacks` (or the one `fallback`), with the retry and breaker settings.
    /// - Throws: ``ConfigurationError`` when an endpoint cannot be used.
    static func pool(for configuration: WorkerConfiguration, logger: Logger) throws(ConfigurationError) -> ResilientBackend {
        func make(_ backend: BackendConfiguration, key: String) throws(ConfigurationError) -> any ChatBackend {
            do {
                return try makeChatBackend(backend, maxConcurrentRequests: configuration.concurrency)
            } catch {
                throw ConfigurationError(key: key, source: "", problem: error.reason)
            }
        }
        func members(_ backends: [BackendConfiguration], key: String) throws(ConfigurationError) -> [ResilientBackend.Member] {
            var members: [ResilientBackend.Member] = []
            for (index, backend) in backends.enumerated() {
                members.append(ResilientBackend.Member(
                    backend: try make(backend, key: "\(key)[\(index)].endpoint"), weight: backend.weight,
                    models: backend.models.map { Set($0 + (backend.model.map { [$0] } ?? [])) }, slots: backend.slots))
            }
            return members
        }
        let primaries: [ResilientBackend.Member]
        if configuration.backends.isEmpty {
            primaries = [ResilientBackend.Member(backend: try make(configuration.backend, key: "backend.endpoint"))]
        } else {
            primaries = try members(configuration.backends, key: "backends")
        }
        var fallbacks = try members(configuration.fallbacks, key: "fallbacks")
        if fallbacks.isEmpty, let fallback = configuration.fallback {
            fallbacks = [ResilientBackend.Member(backend: try make(fallback, key: "fallback.endpoint"))]
        }
        return ResilientBackend(
            members: primaries, fallbacks: fallbacks,
            retry: .init(
                maxAttempts: configuration.retry.maxAttempts, initialBackoff: configuration.retry.initialBackoff,
                maxBackoff: configuration.retry.maxBackoff),
            breaker: .init(failureThreshold: configuration.breaker.failureThreshold, openDuration: configuration.breaker.openDuration),
            affinity: configuration.affinity.enabled, affinityWait: configuration.affinity.maxWait, logger: logger)
    }
}

extension Worker {
    /// Builds the backends a configuration names and a worker over them.
    /// - Throws: ``ConfigurationError`` when an endpoint cannot be used.
    public convenience init(configuration: WorkerConfiguration, logger: Logger, lease: ConsumerNameLease? = nil) throws(ConfigurationError) {
        let backend = try ResilientBackend.pool(for: configuration, logger: logger)
        self.init(configuration: configuration, backend: backend, logger: logger, lease: lease)
    }
}
