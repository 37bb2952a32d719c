import Foundation
import LLMQBackends
import LLMQContract
import LLMQRedis
import Logging

/// What one request's handling has decided so far: the reply, where it goes, and what travels
/// with it.
struct RequestOutcome {
    var reply: Reply
    var replyStream: String
    var deadLetter: RedisCommand?
    var backendTime: Duration?
}

/// One request's context while it is handled.
struct RequestContext {
    var delivery: RequestStream.Delivery
    /// The queue's name (its stream when queues are not configured).
    var queue: String
    var logger: Logger
    var claimedAt: ContinuousClock.Instant
    /// When it was claimed, in Unix milliseconds.
    var now: Int64
    var control: EntryControl
    /// The pool slot taken for it at intake (``ResilientBackend/reservePoolSlots(upTo:)``).
    var ticket: SlotTicket?
    /// A streamed answer's chunk stream, once the request says it wants one (even a broken
    /// request's error goes there as its last chunk).
    var answer: AnswerStream?

    var entryID: String { delivery.entry.id }
}

// One request, from its entry to the reply it gets.
extension Worker {
    func handle(
        _ delivery: RequestStream.Delivery, claimedAt: ContinuousClock.Instant, claimedAtWall: Double, control: EntryControl,
        ticket: SlotTicket? = nil
    ) async {
        let entry = delivery.entry
        let queue = queues.first { $0.stream == delivery.stream }?.name ?? delivery.stream
        var logger = self.logger
        logger[metadataKey: "llmq.request.entry"] = "\(entry.id)"
        if !configuration.queues.isEmpty { logger[metadataKey: "llmq.request.queue"] = "\(queue)" }
        var context = RequestContext(
            delivery: delivery, queue: queue, logger: logger, claimedAt: claimedAt, now: Int64(claimedAtWall), control: control,
            ticket: ticket)
        let parser = parsers[delivery.stream] ?? parsers.values.first!
        let outcome: RequestOutcome?
        if delivery.deliveries > configuration.recovery.maxDeliveries {
            outcome = deadLettered(&context, parser: parser)
        } else {
            outcome = await answered(&context, parser: parser)
        }
        // Nil: the work stopped (another consumer claimed the entry, or shutdown); no reply here.
        guard let outcome, control.reason != .leaseLost else { return }
        let queueMilliseconds = entry.timestampMilliseconds.map { claimedAtWall - Double($0) }
        await finish(outcome, context: context, queueMilliseconds: queueMilliseconds)
    }

    /// Opens the chunk stream a request asks for.
    private func streamTo(_ target: StreamTarget?, callerID: String?, context: inout RequestContext) {
        guard let target else { return }
        let delivery = context.delivery
        let owner = AnswerStream.Owner(
            requests: delivery.stream, group: configuration.streams.group, entryID: context.entryID,
            consumer: configuration.consumer, marker: stream.lostMarker(delivery.stream, context.entryID))
        let control = context.control
        let created = AnswerStream(
            key: streamKey(target, queue: context.queue, entryID: context.entryID), id: callerID ?? context.entryID,
            delivery: delivery.deliveries, owner: owner, writer: stream.writer, settings: configuration.streaming,
            onFenced: { control.cancel(.leaseLost) })
        control.onCancel { created.fence() }
        context.answer = created
    }

    /// An entry delivered more often than `maxDeliveries`: a `dead_letter` error reply, and the
    /// entry's copy in the dead-letter stream.
    private func deadLettered(_ context: inout RequestContext, parser: RequestParser) -> RequestOutcome {
        let delivery = context.delivery
        let message = "delivered \(delivery.deliveries) times without an answer (the consumers handling it crashed or stalled); moved to \(configuration.streams.dead)"
        var callerID: String?
        var replyStream = configuration.streams.replies
        if case .success(let request) = parser.parse(delivery.entry, now: context.now) {
            callerID = request.callerID
            replyStream = request.replyTo ?? replyStream
            streamTo(request.stream, callerID: callerID, context: &context)
        }
        let deadLetter = DeadLetter.record(
            of: delivery.entry, reason: message, deliveries: delivery.deliveries,
            queue: configuration.queues.isEmpty ? nil : context.queue)
        context.logger.warning("request dead-lettered", metadata: ["llmq.request.deliveries": "\(delivery.deliveries)"])
        return RequestOutcome(
            reply: .error(callerID: callerID, entryID: context.entryID, code: "dead_letter", message: message),
            replyStream: replyStream, deadLetter: deadLetter)
    }

    /// Parses the entry and, when it is a valid request, asks the backends.
    /// - Returns: Nil when the work was cancelled (lease lost, or shutdown past its grace).
    private func answered(_ context: inout RequestContext, parser: RequestParser) async -> RequestOutcome? {
        let replies = configuration.streams.replies
        switch context.delivery.parsed ?? parser.parse(context.delivery.entry, now: context.now) {
        case .failure(let rejection):
            streamTo(rejection.stream, callerID: rejection.callerID, context: &context)
            return rejected(
                context, callerID: rejection.callerID, code: rejection.code.rawValue, message: rejection.message,
                replyStream: rejection.replyTo ?? replies)
        case .success(let request) where request.chat.model == nil && backendNeedsModel:
            streamTo(request.stream, callerID: request.callerID, context: &context)
            let message = "the request names no model, and this worker's backend (\(configuration.backend.kind.rawValue)) needs one: add a model field, or set backend.model"
            return rejected(
                context, callerID: request.callerID, code: RequestRejection.Code.invalidRequest.rawValue, message: message,
                replyStream: request.replyTo ?? replies)
        case .success(let request):
            streamTo(request.stream, callerID: request.callerID, context: &context)
            return await completed(request, context: context)
        }
    }

    private func rejected(_ context: RequestContext, callerID: String?, code: String, message: String, replyStream: String) -> RequestOutcome {
        context.logger.notice("request rejected", metadata: ["llmq.request.error_code": "\(code)", "llmq.request.error": "\(message)"])
        return RequestOutcome(
            reply: .error(callerID: callerID, entryID: context.entryID, code: code, message: message), replyStream: replyStream)
    }

    /// A valid request through the backends, within its `deadline_ms`.
    private func completed(_ request: ParsedRequest, context: RequestContext) async -> RequestOutcome? {
        let replyStream = request.replyTo ?? configuration.streams.replies
        let deadline = request.deadlineMilliseconds.map { deadline in
            // Both are non-negative (the contract bounds deadline_ms), so this cannot overflow.
            context.claimedAt + .milliseconds(deadline.subtractingReportingOverflow(context.now).partialValue)
        }
        let started = ContinuousClock.now
        let result = await complete(request.chat, deadline: deadline, streamingTo: context.answer, ticket: context.ticket)
        let backendTime = ContinuousClock.now - started
        switch result {
        case .success(let outcome):
            let completion = outcome.completion
            metrics.tokens(prompt: completion.promptTokens, completion: completion.completionTokens, backend: completion.backend)
            if let firstToken = completion.firstTokenMilliseconds {
                metrics.firstToken(milliseconds: firstToken, backend: completion.backend)
            }
            let reply = Reply.success(callerID: request.callerID, entryID: context.entryID, completion: completion, attempts: outcome.attempts)
            return RequestOutcome(reply: reply, replyStream: replyStream, backendTime: backendTime)
        case .failure(let error):
            if Task.isCancelled {
                if context.control.reason == .leaseLost {
                    // Another consumer claimed it (this one stalled): that one answers.
                    context.logger.warning("request claimed by another consumer while it ran here; its work stopped, the other consumer answers it")
                } else {
                    // Shutdown past its grace period: no reply, no acknowledgement; the entry
                    // stays pending and another consumer will take it.
                    context.logger.notice("request abandoned at shutdown; it stays pending")
                }
                return nil
            }
            context.logger.warning("backend failed", metadata: [
                "llmq.request.error_code": "\(error.error.code.rawValue)", "llmq.request.error": "\(error.error.message)",
                "llmq.request.attempts": "\(error.attempts)",
            ])
            let reply = Reply.error(
                callerID: request.callerID, entryID: context.entryID, code: error.error.code.rawValue,
                message: error.error.message, backend: error.backend ?? backend.primary.name, attempts: error.attempts)
            return RequestOutcome(reply: reply, replyStream: replyStream, backendTime: backendTime)
        }
    }

    /// Ends the chunk stream, adds the timings, publishes the reply, and records it.
    private func finish(_ outcome: RequestOutcome, context: RequestContext, queueMilliseconds: Double?) async {
        var reply = outcome.reply
        var lastChunk: RequestStream.LastChunk?
        if let answer = context.answer {
            let (seq, attempt, written, failure) = await answer.finish()
            metrics.streamChunks.increment(by: written)
            reply.add("stream", answer.key)
            if let failure { reply.add("stream_error", failure) }
            lastChunk = RequestStream.LastChunk(
                stream: answer.key, fields: answer.doneChunk(for: reply, seq: seq, attempt: attempt),
                expire: configuration.streaming.expire, maxLength: configuration.streaming.maxLength)
        }
        let total = ContinuousClock.now - context.claimedAt
        reply.addTimings(
            consumer: configuration.consumer, queueMilliseconds: queueMilliseconds,
            backendMilliseconds: outcome.backendTime?.fractionalMilliseconds,
            totalMilliseconds: total.fractionalMilliseconds)
        if !configuration.queues.isEmpty { reply.add("queue", context.queue) }
        let written = await publish(
            reply, for: context.entryID, on: context.delivery.stream, to: outcome.replyStream, deadLetter: outcome.deadLetter,
            lastChunk: lastChunk, mode: context.delivery.removedFromGroup ? .lost : .owned, logger: context.logger)
        guard written else { return }
        metrics.replied(reply, queue: context.queue)
        if lastChunk != nil { metrics.streamChunks.increment() }
        if outcome.deadLetter != nil { metrics.deadLetters.increment() }
        if let queueMilliseconds { metrics.queueWait.recordNanoseconds(Int64(max(0, queueMilliseconds) * 1_000_000)) }
        if let backendTime = outcome.backendTime {
            metrics.backendTime(backendTime, backend: reply.backend.isEmpty ? backend.primary.name : reply.backend)
        }
        metrics.overhead.recordNanoseconds((total - (outcome.backendTime ?? .zero)).nanoseconds)
    }

    /// Calls the backends; a streamed answer's chunks are written meanwhile by a task of their own.
    private func complete(
        _ chat: ChatRequest, deadline: ContinuousClock.Instant?, streamingTo answer: AnswerStream?, ticket: SlotTicket?
    ) async -> Result<ResilientBackend.Outcome, ResilientBackend.Failure> {
        guard let answer else {
            do {
                return .success(try await backend.complete(chat, deadline: deadline, ticket: ticket))
            } catch {
                return .failure(error)
            }
        }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask { await answer.run() }
            defer { group.cancelAll() }
            do throws(ResilientBackend.Failure) {
                return .success(try await backend.complete(chat, deadline: deadline, streamingTo: answer, ticket: ticket))
            } catch {
                return .failure(error)
            }
        }
    }

    /// The chunk stream of a streamed request: its `stream_to`, else its own.
    private func streamKey(_ target: StreamTarget, queue: String, entryID: String) -> String {
        switch target {
        case .named(let key): key
        case .perRequest: configuration.chunkStream(queue: queue, entryID: entryID)
        }
    }
}
