import HTTPTypes
import Hummingbird
import ServiceLifecycle

// `POST /v1/chat/completions` and `POST /api/chat`: decoding and checks, injected faults, admission to a slot,
// then the whole answer here or the streamed one in `ChatStream.swift`.
extension SimulatorResponder {
    /// Either a value to go on with, or the response that ends the request here.
    enum ChatStep<Value> {
        case next(Value)
        case answer(Response)
    }

    /// Whether the outcome of the admission phase lets generation go ahead.
    enum Admission: Sendable {
        case generate(SlotLease, start: ContinuousClock.Instant)
        case hangOver
    }

    func chat(_ request: Request, flavor: APIFlavor) async -> Response {
        let arrival = ContinuousClock.now
        var request = request
        let taskID = state.recordRequest()

        let chat: ChatRequest
        switch await readChat(&request, flavor: flavor) {
        case .next(let decoded): chat = decoded
        case .answer(let response): return response
        }
        if let refusal = checkModel(chat, flavor: flavor) {
            return refusal
        }
        let decision = state.decideFault(taskID: taskID, streaming: chat.stream)
        let hang: Int?
        switch injectFault(decision, taskID: taskID, flavor: flavor) {
        case .next(let milliseconds): hang = milliseconds
        case .answer(let response): return response
        }

        let completion = Generator.complete(chat, defaultTokens: configuration.defaultTokens)
        let pace = Pace(configuration, promptTokens: completion.promptTokens, slowFactor: decision.slowFactor)
        let job = Job(
            taskID: taskID,
            cache: CacheRequest(
                prompt: PromptTokens.sequence(chat.messages),
                reply: PromptTokens.reply(completion.text),
                reuse: chat.cachePrompt,
                preferredSlot: chat.preferredSlot
            ),
            pace: pace,
            completionTokens: completion.completionTokens,
            streaming: chat.stream
        )

        let admission: Admission
        let watched: Bool
        switch await admit(request, job, arrival: arrival, flavor: flavor, hang: hang) {
        case .next(let admitted): (admission, watched) = (admitted.admission, admitted.watched)
        case .answer(let response): return response
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
            cachedTokens: lease.cachedTokens,
            promptDuration: pace.prompt(cachedTokens: lease.cachedTokens),
            tokenDuration: pace.token,
            midStreamError: decision.midStreamError
        )
        var headers: HTTPFields = [:]
        if watched {
            // The inbound watch consumed the connection's request stream, so the server closes the connection
            // after this response; saying so keeps clients from sending the next request into a closing socket.
            headers[.connection] = "close"
        }
        return chat.stream ? streamedAnswer(plan, lease: lease, headers: headers) : wholeAnswer(plan, lease: lease, headers: headers)
    }

    /// Reads and decodes the body; a body too large or not a chat request is answered here.
    private func readChat(_ request: inout Request, flavor: APIFlavor) async -> ChatStep<ChatRequest> {
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: Self.maxBodySize)
        } catch {
            state.recordInvalid()
            return .answer(failure(flavor, .contentTooLarge, type: "invalid_request_error", "request body too large or unreadable"))
        }
        do {
            return .next(try ChatRequest(flavor: flavor, body: body))
        } catch {
            state.recordInvalid()
            return .answer(failure(flavor, .badRequest, type: "invalid_request_error", error.message))
        }
    }

    /// The model check: Ollama always knows its models; llama-server serves whatever it loaded. Also refuses what
    /// cannot be generated (no messages, too long for the context) and answers Ollama's load-only request.
    private func checkModel(_ chat: ChatRequest, flavor: APIFlavor) -> Response? {
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
        return nil
    }

    /// Answers an injected error fault here; goes on with the hang to inject (nil for none).
    private func injectFault(_ decision: FaultDecision, taskID: Int, flavor: APIFlavor) -> ChatStep<Int?> {
        switch decision.fault {
        case .none:
            return .next(nil)
        case .failure:
            logger.debug("Injecting a 500", metadata: ["llmq.sim.task": "\(taskID)"])
            return .answer(failure(flavor, .internalServerError, type: "server_error", "simulated server error", fault: "failure"))
        case .busy:
            logger.debug("Injecting a 503", metadata: ["llmq.sim.task": "\(taskID)"])
            return .answer(busy(flavor, fault: "busy"))
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
            return .answer(response)
        case .hang(let milliseconds):
            logger.debug("Injecting a hang", metadata: ["llmq.sim.task": "\(taskID)", "llmq.sim.hang_ms": "\(milliseconds)"])
            return .next(milliseconds)
        }
    }

    /// What admission needs to know of a decoded request.
    struct Job: Sendable {
        var taskID: Int
        var cache: CacheRequest
        var pace: Pace
        var completionTokens: Int
        var streaming: Bool

        /// From getting the slot to the answer, given what the prompt cache held.
        func untilAnswer(cachedTokens: Int) -> Duration {
            pace.untilAnswer(cachedTokens: cachedTokens, completionTokens: completionTokens, streaming: streaming)
        }
    }

    /// Admission: take a slot, and for a non-streaming answer also wait out the whole generation. Anything
    /// that waits runs under `consumeWithCancellationOnInboundClose`, so a client that hangs up leaves the
    /// queue or frees its slot at once instead of when the timer would have run out; `watched` says it did.
    private func admit(
        _ request: Request,
        _ job: Job,
        arrival: ContinuousClock.Instant,
        flavor: APIFlavor,
        hang: Int?
    ) async -> ChatStep<(admission: Admission, watched: Bool)> {
        let taskID = job.taskID
        var granted: SlotLease?
        if hang == nil {
            switch state.tryAcquire(taskID: taskID, request: job.cache) {
            case .granted(let lease): granted = lease
            case .rejected: return .answer(busy(flavor, fault: nil))
            case .mustWait: break
            }
        }
        let watched = granted == nil || job.pace.takesTime
        if let lease = granted, !watched {
            return .next((.generate(lease, start: arrival), watched))
        }
        do {
            let admission = try await request.body.consumeWithCancellationOnInboundClose { [granted, state] _ in
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
                    lease = try await state.waitForSlot(taskID: taskID, request: job.cache)
                }
                let start = ContinuousClock.now
                let waitUntilAnswer = job.untilAnswer(cachedTokens: lease.cachedTokens)
                if waitUntilAnswer > .zero {
                    try await Task.sleep(until: start + waitUntilAnswer, clock: .continuous)
                }
                return Admission.generate(lease, start: start)
            }
            return .next((admission, watched))
        } catch is QueueFullError {
            return .answer(busy(flavor, fault: nil))
        } catch {
            granted?.release()
            state.recordCancelled()
            // The client is gone; this answer is only for the framework to drop.
            return .answer(Response(status: .internalServerError, headers: [.connection: "close"]))
        }
    }

    /// The whole answer of a request that did not ask to stream; generation time has already passed.
    private func wholeAnswer(_ plan: StreamPlan, lease: SlotLease, headers: HTTPFields) -> Response {
        var headers = headers
        lease.release()
        state.recordCompleted()
        let completion = plan.completion
        let report = plan.report(completionTokens: completion.completionTokens)
        let buffer: ByteBuffer
        switch plan.flavor {
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

    /// The streamed answer: SSE chunks or NDJSON lines written as tokens fall due (see ``StreamPlan``).
    private func streamedAnswer(_ plan: StreamPlan, lease: SlotLease, headers: HTTPFields) -> Response {
        var headers = headers
        headers[.contentType] = plan.flavor == .openAI ? OpenAIFormat.streamContentType : OllamaFormat.streamContentType
        if plan.flavor == .openAI {
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
}
