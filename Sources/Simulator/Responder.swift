import Foundation
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

    // MARK: Chat completions

    /// Whether the outcome of the admission phase lets generation go ahead.
    private enum Admission: Sendable {
        case generate(SlotLease, start: ContinuousClock.Instant)
        case hangOver
    }

    private func chat(_ request: Request, flavor: APIFlavor) async -> Response {
        let arrival = ContinuousClock.now
        var request = request
        let taskID = state.recordRequest()

        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: Self.maxBodySize)
        } catch {
            state.recordInvalid()
            return failure(flavor, .contentTooLarge, type: "invalid_request_error", "request body too large or unreadable")
        }
        let chat: ChatRequest
        do {
            chat = try ChatRequest(flavor: flavor, body: body)
        } catch {
            state.recordInvalid()
            return failure(flavor, .badRequest, type: "invalid_request_error", error.message)
        }

        // The model check: Ollama always knows its models; llama-server serves whatever it loaded.
        switch flavor {
        case .ollama:
            if chat.model.isEmpty {
                state.recordInvalid()
                return failure(flavor, .badRequest, type: "invalid_request_error", "model is required")
            }
            if !knownModels.contains(Self.normalizedModelName(chat.model)) {
                return modelNotFound(flavor, chat.model)
            }
            if chat.messages.isEmpty {
                state.recordCompleted()
                return Response(
                    status: .ok,
                    headers: [.contentType: OllamaFormat.contentType],
                    body: .init(byteBuffer: OllamaFormat.loadResponse(model: chat.model))
                )
            }
        case .openAI:
            if configuration.strictModels && !chat.model.isEmpty
                && !knownModels.contains(Self.normalizedModelName(chat.model))
            {
                return modelNotFound(flavor, chat.model)
            }
            if chat.messages.isEmpty {
                state.recordInvalid()
                return failure(flavor, .badRequest, type: "invalid_request_error", "'messages' must not be empty")
            }
            let promptTokens = Generator.promptTokens(chat.messages)
            let wanted = chat.maxTokens ?? configuration.defaultTokens
            if promptTokens + wanted > configuration.contextSize {
                state.recordInvalid()
                let contextSize = configuration.contextSize
                return Response(
                    status: .badRequest,
                    headers: [.contentType: OpenAIFormat.contentType],
                    body: .init(
                        byteBuffer: OpenAIFormat.error(
                            code: 400,
                            type: "exceed_context_size_error",
                            message: "the request exceeds the available context size, try increasing it"
                        ) { json in
                            json.field("n_prompt_tokens", promptTokens)
                            json.field("n_ctx", contextSize)
                        }
                    )
                )
            }
        }

        let decision = state.decideFault(taskID: taskID, streaming: chat.stream)
        var hang: Int?
        switch decision.fault {
        case .none:
            break
        case .failure:
            logger.debug("Injecting a 500", metadata: ["llmq.sim.task": "\(taskID)"])
            return failure(flavor, .internalServerError, type: "server_error", "simulated server error", fault: "failure")
        case .busy:
            logger.debug("Injecting a 503", metadata: ["llmq.sim.task": "\(taskID)"])
            return busy(flavor, fault: "busy")
        case .rateLimit:
            logger.debug("Injecting a 429", metadata: ["llmq.sim.task": "\(taskID)"])
            var response = failure(
                flavor,
                .tooManyRequests,
                type: "rate_limit_error",
                "rate limit exceeded, please retry later",
                fault: "rate_limit"
            )
            response.headers[.retryAfter] = "1"
            return response
        case .hang(let milliseconds):
            logger.debug("Injecting a hang", metadata: ["llmq.sim.task": "\(taskID)", "llmq.sim.hang_ms": "\(milliseconds)"])
            hang = milliseconds
        }

        let completion = Generator.complete(chat, defaultTokens: configuration.defaultTokens)
        let slow = decision.slowFactor
        let promptDuration = Self.duration(milliseconds: configuration.promptMilliseconds * slow)
        let tokenDuration = Self.duration(milliseconds: configuration.tokenMilliseconds * slow)
        let hasLatency = promptDuration > .zero || tokenDuration > .zero

        // Admission: take a slot, and for a non-streaming answer also wait out the whole generation. Anything
        // that waits runs under `consumeWithCancellationOnInboundClose`, so a client that hangs up leaves the
        // queue or frees its slot at once instead of when the timer would have run out.
        var granted: SlotLease?
        if hang == nil {
            switch state.tryAcquire(taskID: taskID) {
            case .granted(let lease): granted = lease
            case .rejected: return busy(flavor, fault: nil)
            case .mustWait: break
            }
        }
        let waitUntilAnswer = chat.stream ? promptDuration : promptDuration + tokenDuration * completion.completionTokens
        let admission: Admission
        let watched = granted == nil || hasLatency
        if let lease = granted, !watched {
            admission = .generate(lease, start: arrival)
        } else {
            do {
                admission = try await request.body.consumeWithCancellationOnInboundClose { [granted, state] _ in
                    if let hang {
                        do {
                            // A graceful shutdown ends the hang early, or a 60 s hang would hold up shutdown.
                            try await cancelWhenGracefulShutdown {
                                try await Task.sleep(until: .now + .milliseconds(hang), clock: .continuous)
                            }
                        } catch is CancellationError where !Task.isCancelled {}
                        return Admission.hangOver
                    }
                    let lease: SlotLease
                    if let granted {
                        lease = granted
                    } else {
                        lease = try await state.waitForSlot(taskID: taskID)
                    }
                    let start = ContinuousClock.now
                    if waitUntilAnswer > .zero {
                        try await Task.sleep(until: start + waitUntilAnswer, clock: .continuous)
                    }
                    return Admission.generate(lease, start: start)
                }
            } catch is QueueFullError {
                return busy(flavor, fault: nil)
            } catch {
                granted?.release()
                state.recordCancelled()
                // The client is gone; this answer is only for the framework to drop.
                return Response(status: .internalServerError, headers: [.connection: "close"])
            }
        }

        guard case .generate(let lease, let start) = admission else {
            var response = failure(flavor, .internalServerError, type: "server_error", "simulated hang ended", fault: "hang")
            response.headers[.connection] = "close"
            return response
        }
        let plan = StreamPlan(
            flavor: flavor,
            completion: completion,
            model: chat.model.isEmpty ? (configuration.models.first ?? "sim") : chat.model,
            id: completionID(taskID: taskID),
            created: WallTime.now().seconds,
            arrival: arrival,
            start: start,
            promptDuration: promptDuration,
            tokenDuration: tokenDuration,
            midStreamError: decision.midStreamError
        )
        var headers: HTTPFields = [:]
        if watched {
            // The inbound watch consumed the connection's request stream, so the server closes the connection
            // after this response; saying so keeps clients from sending the next request into a closing socket.
            headers[.connection] = "close"
        }

        if !chat.stream {
            lease.release()
            state.recordCompleted()
            let report = plan.report(completionTokens: completion.completionTokens)
            let buffer: ByteBuffer
            switch flavor {
            case .openAI:
                headers[.contentType] = OpenAIFormat.contentType
                buffer = OpenAIFormat.completion(id: plan.id, created: plan.created, model: plan.model, report: report)
            case .ollama:
                headers[.contentType] = OllamaFormat.contentType
                var json = JSONWriter(capacity: 384 + completion.text.utf8.count)
                OllamaFormat.writeDone(&json, model: plan.model, content: Substring(completion.text), report: report)
                buffer = json.buffer
            }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: buffer))
        }

        headers[.contentType] = flavor == .openAI ? OpenAIFormat.streamContentType : OllamaFormat.streamContentType
        if flavor == .openAI {
            headers[.cacheControl] = "no-cache"
        }
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { [state] writer in
                defer { lease.release() }
                try await plan.stream(to: &writer, state: state)
            }
        )
    }

    private static func duration(milliseconds: Double) -> Duration {
        .nanoseconds(Int64((milliseconds * 1_000_000).rounded()))
    }

    /// "chatcmpl-" and 32 letters and digits, unique per request and run.
    private func completionID(taskID: Int) -> String {
        let alphabet = Self.idAlphabet
        var seed = idSalt ^ UInt64(taskID)
        var bytes: [UInt8] = Array("chatcmpl-".utf8)
        bytes.reserveCapacity(41)
        for _ in 0..<4 {
            var bits = splitMix64(&seed)
            for _ in 0..<8 {
                bytes.append(alphabet[Int(bits % UInt64(alphabet.count))])
                bits /= UInt64(alphabet.count)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static let idAlphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)

    // MARK: Errors

    /// Ollama's answer for a model it does not have, in the dialect's shape.
    private func modelNotFound(_ flavor: APIFlavor, _ model: String) -> Response {
        state.recordInvalid()
        return failure(flavor, .notFound, type: "not_found_error", "model \"\(model)\" not found, try pulling it first")
    }

    /// An error in the dialect's shape; `fault` marks injected faults with an `X-Sim-Fault` header.
    private func failure(
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
    private func busy(_ flavor: APIFlavor, fault: String?) -> Response {
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
    private func notFound(path: String) -> Response {
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

    // MARK: Other endpoints

    private func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [.contentType: OpenAIFormat.contentType],
            body: .init(byteBuffer: ByteBuffer(string: text))
        )
    }

    private func json(_ writer: JSONWriter) -> Response {
        Response(status: .ok, headers: [.contentType: OpenAIFormat.contentType], body: .init(byteBuffer: writer.buffer))
    }

    private func slots() -> Response {
        var json = JSONWriter()
        json.beginArray()
        for (id, task) in state.slotTasks.enumerated() {
            json.beginObject()
            json.field("id", id)
            json.field("id_task", task)
            json.field("n_ctx", configuration.contextSize)
            json.field("speculative", false)
            json.field("is_processing", task >= 0)
            json.endObject()
        }
        json.endArray()
        return self.json(json)
    }

    private func props() -> Response {
        var json = JSONWriter()
        json.beginObject()
        json.key("default_generation_settings")
        json.beginObject()
        json.field("n_ctx", configuration.contextSize)
        json.key("params")
        json.beginObject()
        json.field("n_predict", -1)
        json.endObject()
        json.endObject()
        json.field("total_slots", configuration.slots)
        json.field("model_path", "/models/\(configuration.models.first ?? "sim").gguf")
        json.field("build_info", "llmq-sim")
        json.endObject()
        return self.json(json)
    }

    private func modelList() -> Response {
        var json = JSONWriter()
        json.beginObject()
        json.field("object", "list")
        json.key("data")
        json.beginArray()
        for model in configuration.models {
            json.beginObject()
            json.field("id", model)
            json.field("object", "model")
            json.key("created")
            json.int64(started.seconds)
            json.field("owned_by", "llamacpp")
            json.endObject()
        }
        json.endArray()
        json.endObject()
        return self.json(json)
    }

    private func tags() -> Response {
        let modified = WallTime(seconds: started.seconds, nanoseconds: 0).rfc3339
        var json = JSONWriter()
        json.beginObject()
        json.key("models")
        json.beginArray()
        for model in configuration.models {
            let name = Self.normalizedModelName(model)
            var seed = Generator.fnv1a(Generator.offsetBasis, name.utf8)
            var digest = ""
            for _ in 0..<4 {
                let word = String(splitMix64(&seed), radix: 16)
                digest += String(repeating: "0", count: 16 - word.count) + word
            }
            let family = String(name.prefix(while: { $0 != ":" }))
            json.beginObject()
            json.field("name", name)
            json.field("model", name)
            json.field("modified_at", modified)
            json.field("size", 1_000_000)
            json.field("digest", digest)
            json.key("details")
            json.beginObject()
            json.field("parent_model", "")
            json.field("format", "gguf")
            json.field("family", family)
            json.key("families")
            json.beginArray()
            json.string(family)
            json.endArray()
            json.field("parameter_size", "1M")
            json.field("quantization_level", "Q8_0")
            json.endObject()
            json.endObject()
        }
        json.endArray()
        json.endObject()
        return self.json(json)
    }

    private func simStats() -> Response {
        let stats = state.stats
        var json = JSONWriter()
        json.beginObject()
        json.field("requests", stats.requests)
        json.field("completed", stats.completed)
        json.field("inFlight", stats.inFlight)
        json.field("maxInFlight", stats.maxInFlight)
        json.field("queued", stats.queued)
        json.field("rejected", stats.rejected)
        json.field("faults", stats.faults)
        json.field("invalid", stats.invalid)
        json.field("cancelled", stats.cancelled)
        json.endObject()
        return self.json(json)
    }

    private func simFaults() -> Response {
        do {
            let data = try JSONEncoder().encode(state.faults)
            return json(String(decoding: data, as: UTF8.self))
        } catch {
            return json(#"{"error":"could not encode faults"}"#, status: .internalServerError)
        }
    }

    private func setSimFaults(_ request: Request) async -> Response {
        var request = request
        let faults: SimulatorFaults
        do {
            let body = try await request.collectBody(upTo: 1024 * 1024)
            faults = try JSONDecoder().decode(SimulatorFaults.self, from: body.withUnsafeReadableBytes { Data($0) })
            try faults.validate()
        } catch let error as SimulatorConfigurationError {
            return simError(error.description)
        } catch {
            return simError("invalid faults body: \(error)")
        }
        state.setFaults(faults)
        logger.info("Faults replaced", metadata: ["llmq.sim.faults": "\(faults)"])
        return simFaults()
    }

    private func simError(_ message: String) -> Response {
        Response(
            status: .badRequest,
            headers: [.contentType: OllamaFormat.contentType],
            body: .init(byteBuffer: OllamaFormat.error(message))
        )
    }
}

/// Everything a response needs after admission; `Sendable` so the streaming body can carry it.
struct StreamPlan: Sendable {
    var flavor: APIFlavor
    var completion: Completion
    var model: String
    var id: String
    var created: Int64
    var arrival: ContinuousClock.Instant
    /// When the slot was granted; token deadlines count from here so a stream does not drift.
    var start: ContinuousClock.Instant
    var promptDuration: Duration
    var tokenDuration: Duration
    var midStreamError: Bool

    func report(completionTokens: Int) -> GenerationReport {
        GenerationReport(
            completion: completion,
            promptDuration: promptDuration,
            evalDuration: tokenDuration * completionTokens,
            queueDuration: start - arrival,
            totalDuration: ContinuousClock.now - arrival
        )
    }

    /// Writes the stream and counts how it ended: completed, mid-stream fault, or cancelled (the client went away).
    /// The outcome is counted before the last write, so a client that has read the whole stream sees it in `/sim/stats`.
    func stream(to writer: inout any ResponseBodyWriter, state: SimulatorState) async throws {
        var counted = false
        do {
            try await stream(to: &writer) { completed in
                counted = true
                if completed {
                    state.recordCompleted()
                } else {
                    state.recordFault()
                }
            }
        } catch {
            if !counted {
                state.recordCancelled()
            }
            throw error
        }
    }

    /// Writes the stream; calls `ending(false)` before writing an injected mid-stream error, `ending(true)` before
    /// writing the final chunk.
    private func stream(to writer: inout any ResponseBodyWriter, ending: (Bool) -> Void) async throws {
        let count = completion.completionTokens
        // "A few tokens" in, but never the whole answer, so the error is really mid-stream.
        let failAfter = midStreamError ? min(3, max(count - 1, 0)) : Int.max
        var json = JSONWriter(capacity: 256)
        if flavor == .openAI {
            OpenAIFormat.writeChunk(&json, id: id, created: created, model: model, content: nil, first: true)
        }
        let firstToken = start + promptDuration
        for index in 0..<count {
            if index == failAfter {
                break
            }
            let deadline = firstToken + tokenDuration * (index + 1)
            if deadline > .now {
                // Only sleep when the next token is due later; tokens already due go out in one write.
                if json.buffer.readableBytes > 0 {
                    try await writer.write(json.buffer)
                    json = JSONWriter(capacity: 256)
                }
                try await Task.sleep(until: deadline, clock: .continuous)
            }
            let token = completion.token(index)
            switch flavor {
            case .openAI:
                OpenAIFormat.writeChunk(&json, id: id, created: created, model: model, content: token)
            case .ollama:
                OllamaFormat.writeTokenLine(&json, model: model, content: token)
            }
        }
        if failAfter < count {
            let message = "an error was encountered while running the model: simulated mid-stream failure"
            switch flavor {
            case .openAI:
                OpenAIFormat.writeStreamError(&json, message: message)
            case .ollama:
                json.beginObject()
                json.field("error", message)
                json.endObject()
                json.raw("\n")
            }
            ending(false)
            try await writer.write(json.buffer)
            try await writer.finish(nil)
            return
        }
        let report = report(completionTokens: count)
        switch flavor {
        case .openAI:
            OpenAIFormat.writeChunk(&json, id: id, created: created, model: model, content: nil, finish: report)
            json.raw("data: [DONE]\n\n")
        case .ollama:
            OllamaFormat.writeDone(&json, model: model, content: "", report: report)
            json.raw("\n")
        }
        ending(true)
        try await writer.write(json.buffer)
        try await writer.finish(nil)
    }
}
