import LLMQHTTP

/// Builds the backend a configuration describes, with an HTTP client of its own.
/// - Throws: ``EndpointError`` when the endpoint cannot be used.
public func makeChatBackend(_ configuration: BackendConfiguration, maxConcurrentRequests: Int) throws(EndpointError) -> any ChatBackend {
    let (api, url) = try configuration.resolvedEndpoint()
    let client = HTTPClient(
        configuration: .init(
            connectTimeout: configuration.connectTimeout,
            maxCachedConnections: max(8, maxConcurrentRequests * 2)
        )
    )
    let name = configuration.resolvedName
    switch api {
    case .openAIChat:
        return OpenAIChatBackend(name: name, url: url, configuration: configuration, client: client)
    case .ollamaChat:
        return OllamaChatBackend(name: name, url: url, configuration: configuration, client: client)
    }
}
