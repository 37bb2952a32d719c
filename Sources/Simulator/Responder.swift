import HTTPTypes
import Hummingbird
import Logging
import ServiceLifecycle

/// Routes every request of the simulator. A hand-written switch instead of Hummingbird's `Router` because the
/// route set is fixed and small, unknown paths must answer in each server's own 404 shape, and the zero-latency
/// benchmark path should not pay for a trie walk and middleware.
struct SimulatorResponder: HTTPResponder {
    typealias Context = BasicRequestContext

    let configuration: SimulatorConfiguration
    let state: SimulatorState
    let logger: Logger
    /// Configured model names normalised to "name:tag", for Ollama-style matching.
    let knownModels: Set<String>
    /// When the server started; Ollama's `modified_at` and OpenAI's model `created`.
    let started: WallTime
    /// Distinguishes completion ids across runs.
    let idSalt: UInt64

    /// Large prompts are fine; an unbounded body is not.
    static let maxBodySize = 64 * 1024 * 1024

    init(configuration: SimulatorConfiguration, state: SimulatorState, logger: Logger) {
        self.configuration = configuration
        self.state = state
        self.logger = logger
        self.knownModels = Set(configuration.models.map(Self.normalizedModelName))
        self.started = WallTime.now()
        self.idSalt = UInt64(bitPattern: started.seconds) &* 1_000_000_007 &+ UInt64(started.nanoseconds)
    }

    /// Ollama treats "name" as "name:latest"; a tag is whatever follows the last ":" after the last "/".
    static func normalizedModelName(_ name: String) -> String {
        let lastComponent = name.split(separator: "/", omittingEmptySubsequences: false).last ?? Substring(name)
        return lastComponent.contains(":") ? name : name + ":latest"
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        switch (request.method, request.uri.path) {
        case (.post, "/v1/chat/completions"), (.post, "/chat/completions"):
            return await chat(request, flavor: .openAI)
        case (.post, "/api/chat"):
            return await chat(request, flavor: .ollama)
        case (.get, "/health"), (.get, "/v1/health"):
            return json(#"{"status":"ok"}"#)
        case (.get, "/slots"):
            return slots()
        case (.get, "/props"):
            return props()
        case (.get, "/v1/models"), (.get, "/models"):
            return modelList()
        case (.get, "/api/tags"):
            return tags()
        case (.get, "/api/version"):
            return json(#"{"version":"0.12.0"}"#)
        case (.get, "/"), (.head, "/"):
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: "Ollama is running"))
            )
        case (.get, "/sim/stats"):
            return simStats()
        case (.get, "/sim/faults"):
            return simFaults()
        case (.post, "/sim/faults"):
            return await setSimFaults(request)
        case (.post, "/sim/reset"):
            state.resetStats()
            return simStats()
        default:
            return notFound(path: request.uri.path)
        }
    }

    // MARK: Errors

    /// Ollama's answer for a model it does not have, in the dialect's shape.
    func modelNotFound(_ flavor: APIFlavor, _ model: String) -> Response {
        state.recordInvalid()
        return failure(flavor, .notFound, type: "not_found_error", "model \"\(model)\" not found, try pulling it first")
    }

    /// An error in the dialect's shape; `fault` marks injected faults with an `X-Sim-Fault` header.
    func failure(
        _ flavor: APIFlavor,
        _ status: HTTPResponse.Status,
        type: StaticString,
        _ message: String,
        fault: String? = nil
    ) -> Response {
        var headers: HTTPFields = [:]
        if let fault {
            headers[Self.faultHeader] = fault
        }
        switch flavor {
        case .openAI:
            headers[.contentType] = OpenAIFormat.contentType
            return Response(
                status: status,
                headers: headers,
                body: .init(byteBuffer: OpenAIFormat.error(code: status.code, type: type, message: message))
            )
        case .ollama:
            headers[.contentType] = OllamaFormat.contentType
            return Response(status: status, headers: headers, body: .init(byteBuffer: OllamaFormat.error(message)))
        }
    }

    /// Ollama's answer when its queue is full (the same text serves the injected busy fault).
    func busy(_ flavor: APIFlavor, fault: String?) -> Response {
        var response = failure(
            flavor,
            .serviceUnavailable,
            type: "unavailable_error",
            "server busy, please try again.  maximum pending requests exceeded",
            fault: fault
        )
        response.headers[.retryAfter] = "1"
        return response
    }

    static let faultHeader = HTTPField.Name("X-Sim-Fault")!

    /// gin's plain-text 404 on Ollama paths, llama-server's JSON 404 elsewhere.
    func notFound(path: String) -> Response {
        if path.hasPrefix("/api/") || path.hasPrefix("/sim/") {
            return Response(
                status: .notFound,
                headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: "404 page not found"))
            )
        }
        return Response(
            status: .notFound,
            headers: [.contentType: OpenAIFormat.contentType],
            body: .init(byteBuffer: OpenAIFormat.error(code: 404, type: "not_found_error", message: "File Not Found"))
        )
    }

    // MARK: JSON responses

    func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [.contentType: OpenAIFormat.contentType],
            body: .init(byteBuffer: ByteBuffer(string: text))
        )
    }

    func json(_ writer: JSONWriter) -> Response {
        Response(status: .ok, headers: [.contentType: OpenAIFormat.contentType], body: .init(byteBuffer: writer.buffer))
    }
}
