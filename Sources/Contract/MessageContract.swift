import Foundation
import LLMQBackends
import LLMQConfiguration
import LLMQRedis

/// A request that passed validation.
public struct ParsedRequest: Sendable {
    public var entryID: String
    /// The producer's correlation `id`, if it gave one.
    public var callerID: String?
    /// The stream the reply goes to, if not the default.
    public var replyTo: String?
    public var chat: ChatRequest
    /// When the request stops being worth answering, in Unix milliseconds.
    public var deadlineMilliseconds: Int64?
    /// Whether the answer is streamed as it is generated, and where to (see ``StreamTarget``).
    public var stream: StreamTarget?
}

/// Where a streamed answer's chunks go.
public enum StreamTarget: Sendable, Hashable {
    /// The request's own stream, `<replyToPrefix>stream:<entry ID>` (with a queue's name before
    /// the ID for a named queue).
    case perRequest
    /// The stream the request named in `stream_to`.
    case named(String)
}

/// Why a request gets an error reply without reaching a backend.
public struct RequestRejection: Error, Sendable {
    public enum Code: String, Sendable {
        case invalidRequest = "invalid_request"
        case expired
        case requestLost = "request_lost"
    }

    public var code: Code
    public var message: String
    /// Routing taken from the entry where it could be read, so the error reaches its producer.
    public var callerID: String?
    public var replyTo: String?
    /// The stream a streaming request's chunks go to, when it could be read: its last chunk
    /// says what was wrong too.
    public var stream: StreamTarget?
}

/// Reads request entries as the README's message contract describes them.
///
/// Fields: `prompt` or `messages` (exactly one), optional `system`, `model`, `max_tokens`,
/// `temperature`, `top_p`, `top_k`, `seed`, `stop`, `id`, `reply_to`, `ttl_ms`, `deadline_ms`,
/// `stream`, `stream_to`, `user` (whose turn it is under fair intake), `session` (the
/// conversation it belongs to, for affinity).
/// Other fields are ignored, so producers may attach their own metadata.
public struct RequestParser: Sendable {
    public var limits: WorkerConfiguration.Limits
    public var replyToPrefix: String
    /// Streams a `reply_to` may not name even under the prefix: the request stream (a reply
    /// there would come back as a request), the dead-letter and history streams.
    public var reservedStreams: Set<String>
    /// The default reply stream, which a `stream_to` may not name either.
    public var replies: String
    /// In Redis Cluster mode, the request stream: `reply_to` and `stream_to` must be in its slot,
    /// since the reply script writes them with the acknowledgement (Redis would refuse another
    /// slot with `CROSSSLOT`).
    public var clusterSlotOf: String?

    public init(
        limits: WorkerConfiguration.Limits, replyToPrefix: String, reservedStreams: Set<String> = [],
        replies: String = WorkerConfiguration.Streams().replies, clusterSlotOf: String? = nil
    ) {
        self.limits = limits
        self.replyToPrefix = replyToPrefix
        self.reservedStreams = reservedStreams
        self.replies = replies
        self.clusterSlotOf = clusterSlotOf
    }

    /// Why `key`, named in `field`, cannot be written with the reply in cluster mode; nil when it can.
    private func slotProblem(_ field: String, _ key: String) -> String? {
        guard let requests = clusterSlotOf, HashSlot.of(key) != HashSlot.of(requests) else { return nil }
        let tag = HashSlot.tag(of: requests).map { " (hash tag {\($0)})" } ?? ""
        return "\(field) \(key) is in another Redis Cluster slot than the request stream \(requests)\(tag): use a key with the same hash tag"
    }

    static let knownFields: Set<String> = [
        "prompt", "messages", "system", "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop",
        "id", "reply_to", "ttl_ms", "deadline_ms", "stream", "stream_to", "user", "session",
    ]

    /// - Parameter now: The current time in Unix milliseconds, for `ttl_ms` and `deadline_ms`.
    public func parse(_ entry: StreamEntry, now: Int64) -> Result<ParsedRequest, RequestRejection> {
        guard let rawFields = entry.fields else {
            return .failure(RequestRejection(
                code: .requestLost, message: "the request entry was deleted from the stream before it was answered"))
        }
        let (fields, size, duplicate) = Self.knownFields(of: rawFields)
        // Routing first: even a broken request should get its error where its producer listens.
        var rejection = RequestRejection(code: .invalidRequest, message: "")
        func reject(_ message: String) -> Result<ParsedRequest, RequestRejection> {
            rejection.message = message
            return .failure(rejection)
        }
        do {
            try route(fields, into: &rejection)
            if size > limits.maxRequestBytes {
                return reject("the request is \(size) bytes, over the limit of \(limits.maxRequestBytes) bytes")
            }
            if let duplicate {
                return reject("field \"\(duplicate)\" is given more than once")
            }
            if let user = fields["user"], String(validating: user, as: UTF8.self) == nil || user.count > 256 {
                // Fair intake keeps a longer one with the requests that name no user.
                return reject("user must be UTF-8 text of at most 256 bytes")
            }
            var chat = ChatRequest(messages: try Self.messages(fields))
            try readOptions(fields, into: &chat)
            chat.affinityKey = try Self.affinityKey(fields, messages: chat.messages)
            let deadline = try deadline(fields, entry: entry, now: now)
            if let deadline, now >= deadline {
                rejection.code = .expired
                let (late, overflow) = now.subtractingReportingOverflow(deadline)
                return reject("the request expired \(overflow ? "long" : "\(late) ms") before a worker took it (deadline \(deadline))")
            }
            return .success(ParsedRequest(
                entryID: entry.id, callerID: rejection.callerID, replyTo: rejection.replyTo,
                chat: chat, deadlineMilliseconds: deadline, stream: rejection.stream))
        } catch {
            return reject(error.message)
        }
    }

    /// The fields llmq reads, by name; the size of all fields; the first known field given twice.
    private static func knownFields(
        of rawFields: [(name: [UInt8], value: [UInt8])]
    ) -> (fields: [String: [UInt8]], size: Int, duplicate: String?) {
        var fields: [String: [UInt8]] = [:]
        var size = 0
        var duplicate: String?
        for (name, value) in rawFields {
            size += name.count + value.count
            let key = String(decoding: name, as: UTF8.self)
            if knownFields.contains(key), fields.updateValue(value, forKey: key) != nil, duplicate == nil {
                duplicate = key
            }
        }
        return (fields, size, duplicate)
    }

    /// Reads `id`, `reply_to`, `stream` and `stream_to` into `routing`, each as soon as it is
    /// valid, so that an error found later still goes where the producer listens.
    private func route(_ fields: [String: [UInt8]], into routing: inout RequestRejection) throws(Problem) {
        if let id = fields["id"] {
            guard let text = String(validating: id, as: UTF8.self), id.count <= 256 else {
                throw Problem("id must be UTF-8 text of at most 256 bytes")
            }
            routing.callerID = text
        }
        if let target = fields["reply_to"] {
            guard let text = String(validating: target, as: UTF8.self), !text.isEmpty, target.count <= 512 else {
                throw Problem("reply_to must be a stream key of 1 to 512 bytes")
            }
            guard text.hasPrefix(replyToPrefix) else {
                throw Problem("reply_to \"\(text)\" is not allowed: reply streams must start with \"\(replyToPrefix)\"")
            }
            guard !reservedStreams.contains(text) else {
                throw Problem("reply_to \"\(text)\" is not allowed: it is one of llmq's own streams")
            }
            if let problem = slotProblem("reply_to", text) { throw Problem(problem) }
            routing.replyTo = text
        }
        switch streamTarget(fields) {
        case .success(let target): routing.stream = target
        case .failure(let problem): throw problem
        }
    }

    /// The conversation: `prompt` or `messages`, after an optional `system`.
    private static func messages(_ fields: [String: [UInt8]]) throws(Problem) -> [ChatMessage] {
        var messages: [ChatMessage]
        switch (fields["prompt"], fields["messages"]) {
        case (nil, nil):
            throw Problem("missing field: give \"prompt\" (text) or \"messages\" (a JSON array of {\"role\",\"content\"})")
        case (.some, .some):
            throw Problem("give either \"prompt\" or \"messages\", not both")
        case (let prompt?, nil):
            guard let text = String(validating: prompt, as: UTF8.self) else { throw Problem("prompt is not valid UTF-8") }
            guard !text.allSatisfy(\.isWhitespace) else { throw Problem("prompt is empty") }
            messages = [ChatMessage(role: .user, content: text)]
        case (nil, let encoded?):
            switch parseMessages(encoded) {
            case .success(let parsed): messages = parsed
            case .failure(let problem): throw problem
            }
        }
        if let system = fields["system"] {
            guard let text = String(validating: system, as: UTF8.self) else { throw Problem("system is not valid UTF-8") }
            messages.insert(ChatMessage(role: .system, content: text), at: 0)
        }
        return messages
    }

    /// `model`, `max_tokens` and the sampling options, each within its range.
    private func readOptions(_ fields: [String: [UInt8]], into chat: inout ChatRequest) throws(Problem) {
        if let model = try text(fields, "model") {
            guard !model.isEmpty, model.utf8.count <= 256 else { throw Problem("model must be 1 to 256 bytes") }
            chat.model = model
        }
        let maxTokens = try integer(fields, "max_tokens", in: 1...Int64(limits.maxTokens))
        chat.maxTokens = maxTokens.map { Int($0) } ?? limits.defaultMaxTokens
        chat.temperature = try number(fields, "temperature", in: 0...2)
        chat.topP = try number(fields, "top_p", in: 0...1)
        chat.topK = try integer(fields, "top_k", in: 0...100_000).map { Int($0) }
        chat.seed = try integer(fields, "seed", in: Int64(Int32.min)...Int64(UInt32.max)).map { Int($0) }
        if let stop = fields["stop"] {
            chat.stop = try Self.parseStop(stop)
        }
    }

    /// Which conversation the request continues, for conversation affinity: its `session`, else,
    /// when its messages hold an assistant turn (a next turn), the conversation's opening, every
    /// message up to and including the first user message, which each of its turns repeats.
    /// A first turn without `session` has none and goes where the weights send it.
    private static func affinityKey(_ fields: [String: [UInt8]], messages: [ChatMessage]) throws(Problem) -> String? {
        if let session = fields["session"] {
            guard String(validating: session, as: UTF8.self) != nil, (1...256).contains(session.count) else {
                throw Problem("session must be UTF-8 text of 1 to 256 bytes")
            }
            return "session:" + String(decoding: session, as: UTF8.self)
        }
        guard messages.contains(where: { $0.role == .assistant }),
            let firstUser = messages.firstIndex(where: { $0.role == .user })
        else { return nil }
        var opening = ""
        for message in messages[...firstUser] {
            opening += message.role.rawValue + "\u{0}" + message.content + "\u{0}"
        }
        return "opening:" + opening
    }

    /// The earlier of `ttl_ms` (from the entry's time) and `deadline_ms`, in Unix milliseconds.
    private func deadline(_ fields: [String: [UInt8]], entry: StreamEntry, now: Int64) throws(Problem) -> Int64? {
        // An explicit ID may lie anywhere up to 2^64 - 1 ms: a time from the future would only
        // stretch the TTL, so it counts from now at the latest.
        let entryTime = min(entry.timestampMilliseconds ?? now, now)
        var deadline: Int64?
        if let ttl = try integer(fields, "ttl_ms", in: 1...Int64(365 * 86_400_000)) {
            let (sum, overflow) = entryTime.addingReportingOverflow(ttl)
            deadline = overflow ? .max : sum
        }
        if let absolute = try integer(fields, "deadline_ms", in: 1...Int64.max / 2) {
            deadline = min(deadline ?? absolute, absolute)
        }
        return deadline
    }

    private struct Problem: Error {
        var message: String

        init(_ message: String) {
            self.message = message
        }

        init(message: String) {
            self.message = message
        }
    }

    /// `stream` (`true`/`false`, `1`/`0`) and `stream_to` (a stream under the reply prefix;
    /// giving one turns streaming on). Nil when the answer is not streamed.
    private func streamTarget(_ fields: [String: [UInt8]]) -> Result<StreamTarget?, Problem> {
        var wanted: Bool?
        if let raw = fields["stream"] {
            let text = String(decoding: raw.prefix(16), as: UTF8.self).trimmingCharacters(in: .whitespaces).lowercased()
            switch text {
            case "1", "true": wanted = true
            case "0", "false": wanted = false
            default:
                let shown = String(decoding: raw.prefix(40), as: UTF8.self)
                return .failure(Problem(message: "stream must be true or false (or 1 or 0), got \"\(shown)\""))
            }
        }
        guard let target = fields["stream_to"] else { return .success(wanted == true ? .perRequest : nil) }
        guard wanted != false else {
            return .failure(Problem(message: "stream_to is given but stream is false: drop one of them"))
        }
        guard let text = String(validating: target, as: UTF8.self), !text.isEmpty, target.count <= 512 else {
            return .failure(Problem(message: "stream_to must be a stream key of 1 to 512 bytes"))
        }
        guard text.hasPrefix(replyToPrefix) else {
            return .failure(Problem(message: "stream_to \"\(text)\" is not allowed: streams must start with \"\(replyToPrefix)\""))
        }
        let replyStream = fields["reply_to"].map { String(decoding: $0, as: UTF8.self) } ?? replies
        guard !reservedStreams.contains(text), text != replies, text != replyStream else {
            return .failure(Problem(message: "stream_to \"\(text)\" is not allowed: it is a reply stream or one of llmq's own streams"))
        }
        if let problem = slotProblem("stream_to", text) { return .failure(Problem(message: problem)) }
        return .success(.named(text))
    }

    private func text(_ fields: [String: [UInt8]], _ name: String) throws(Problem) -> String? {
        guard let value = fields[name] else { return nil }
        guard let text = String(validating: value, as: UTF8.self) else { throw Problem(message: "\(name) is not valid UTF-8") }
        return text
    }

    private func integer(_ fields: [String: [UInt8]], _ name: String, in range: ClosedRange<Int64>) throws(Problem) -> Int64? {
        guard let raw = try text(fields, name) else { return nil }
        guard let value = Int64(raw.trimmingCharacters(in: .whitespaces)) else {
            throw Problem(message: "\(name) must be a whole number, got \"\(raw.prefix(40))\"")
        }
        guard range.contains(value) else {
            throw Problem(message: "\(name) \(value) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    private func number(_ fields: [String: [UInt8]], _ name: String, in range: ClosedRange<Double>) throws(Problem) -> Double? {
        guard let raw = try text(fields, name) else { return nil }
        guard let value = Double(raw.trimmingCharacters(in: .whitespaces)), value.isFinite else {
            throw Problem(message: "\(name) must be a number, got \"\(raw.prefix(40))\"")
        }
        guard range.contains(value) else {
            throw Problem(message: "\(name) \(raw) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// `stop` is one stop string, or a JSON array of them when it starts with `[`.
    private static func parseStop(_ raw: [UInt8]) throws(Problem) -> [String] {
        guard let text = String(validating: raw, as: UTF8.self) else { throw Problem(message: "stop is not valid UTF-8") }
        guard text.first == "[" else { return text.isEmpty ? [] : [text] }
        guard let array = try? JSONDecoder().decode([String].self, from: Data(raw)) else {
            throw Problem(message: "stop starts with \"[\" but is not a JSON array of strings")
        }
        guard array.count <= 16 else { throw Problem(message: "stop has \(array.count) strings, at most 16 are allowed") }
        return array
    }

    private static func parseMessages(_ raw: [UInt8]) -> Result<[ChatMessage], Problem> {
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: Data(raw), options: [.fragmentsAllowed])
        } catch {
            return .failure(Problem(message: "messages is not valid JSON: \(jsonErrorSummary(error))"))
        }
        guard let array = value as? [Any] else {
            return .failure(Problem(message: "messages must be a JSON array of {\"role\",\"content\"} objects"))
        }
        guard !array.isEmpty else { return .failure(Problem(message: "messages is empty")) }
        var messages: [ChatMessage] = []
        messages.reserveCapacity(array.count)
        let roles = ChatMessage.Role.allCases.map(\.rawValue).joined(separator: ", ")
        for (index, element) in array.enumerated() {
            guard let object = element as? [String: Any] else {
                return .failure(Problem(message: "messages[\(index)] must be an object with \"role\" and \"content\""))
            }
            guard let roleName = object["role"] as? String else {
                return .failure(Problem(message: "messages[\(index)].role must be a string (\(roles))"))
            }
            guard let role = ChatMessage.Role(rawValue: roleName) else {
                return .failure(Problem(message: "messages[\(index)].role \"\(roleName.prefix(40))\" is not one of \(roles)"))
            }
            guard let content = object["content"] as? String else {
                return .failure(Problem(message: "messages[\(index)].content must be a string"))
            }
            messages.append(ChatMessage(role: role, content: content))
        }
        return .success(messages)
    }
}
