import Foundation
import Hummingbird
import LLMQWire

/// The two request dialects the simulator speaks, which decide error shapes and response formats.
enum APIFlavor: Sendable {
    /// OpenAI-compatible `/v1/chat/completions` (llama-server, and Ollama's compatibility layer).
    case openAI
    /// Ollama's native `/api/chat`.
    case ollama
}

/// One chat message with its text flattened (content parts are joined; images are ignored).
struct ChatMessage: Sendable {
    var role: String
    var content: String

    init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    init(_ body: ChatMessageBody) {
        self.init(role: body.role, content: body.text)
    }
}

/// A chat request of either dialect, reduced to what the simulator acts on.
struct ChatRequest: Sendable {
    var model: String
    var messages: [ChatMessage]
    /// The request's completion limit, if it gave a positive one.
    var maxTokens: Int?
    var seed: Int64
    var stop: [String]
    var stream: Bool
    /// llama-server's `cache_prompt` (default true): reuse what the prompt cache holds.
    var cachePrompt: Bool = true
    /// llama-server's `id_slot`: the slot to use when it is free (-1 or absent: any).
    var preferredSlot: Int?
}

/// llama-server's own fields of an OpenAI-compatible request, decoded beside the shared wire type in the same
/// pass. A wrongly typed one is ignored rather than refused, as llama-server's `json_value` falls back to the
/// default with a warning.
private struct LlamaServerChatRequest: Decodable {
    var chat: OpenAIChatRequest
    var cachePrompt: Bool?
    var idSlot: Int?

    private enum CodingKeys: String, CodingKey {
        case cachePrompt = "cache_prompt"
        case idSlot = "id_slot"
    }

    init(from decoder: any Decoder) throws {
        self.chat = try OpenAIChatRequest(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.cachePrompt = try? container.decodeIfPresent(Bool.self, forKey: .cachePrompt)
        self.idSlot = try? container.decodeIfPresent(Int.self, forKey: .idSlot)
    }
}

/// A request body the simulator refuses, with a message for the client.
struct BadRequest: Error {
    var message: String
}

extension ChatRequest {
    /// Decodes a request body of the given dialect. Sampling fields are decoded only so a wrongly typed one
    /// is a 400, as on the real servers; the simulator's output does not depend on them.
    /// - Throws: `BadRequest` with a message naming the offending field.
    init(flavor: APIFlavor, body: ByteBuffer) throws(BadRequest) {
        let data = body.withUnsafeReadableBytes { Data($0) }
        let decoder = JSONDecoder()
        do {
            switch flavor {
            case .openAI:
                let extended = try decoder.decode(LlamaServerChatRequest.self, from: data)
                let decoded = extended.chat
                // llama-server reads max_tokens, then the newer max_completion_tokens, then its own n_predict.
                let limit = decoded.maxCompletionTokens ?? decoded.maxTokens ?? decoded.nPredict
                self.init(
                    model: decoded.model ?? "",
                    messages: decoded.messages.map(ChatMessage.init),
                    maxTokens: limit.flatMap { $0 > 0 ? $0 : nil },
                    seed: decoded.seed ?? 0,
                    stop: decoded.stop?.values ?? [],
                    stream: decoded.stream ?? false,
                    cachePrompt: extended.cachePrompt ?? true,
                    preferredSlot: extended.idSlot.flatMap { $0 >= 0 ? $0 : nil }
                )
            case .ollama:
                let decoded = try decoder.decode(OllamaChatRequest.self, from: data)
                self.init(
                    model: decoded.model ?? "",
                    messages: (decoded.messages ?? []).map(ChatMessage.init),
                    // Ollama's -1 (no limit) and -2 (fill the context) fall back to the default length.
                    maxTokens: decoded.options?.numPredict.flatMap { $0 > 0 ? $0 : nil },
                    seed: decoded.options?.seed ?? 0,
                    stop: decoded.options?.stop?.values ?? [],
                    // Ollama streams unless told otherwise.
                    stream: decoded.stream ?? true
                )
            }
        } catch let error as DecodingError {
            throw BadRequest(message: Self.describe(error))
        } catch {
            throw BadRequest(message: "invalid request body: \(error)")
        }
    }

    /// Turns a `DecodingError` into one line naming the field, instead of Foundation's nested dump.
    private static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
            var text = ""
            for key in codingPath + (last.map { [$0] } ?? []) {
                if let index = key.intValue {
                    text += "[\(index)]"
                } else {
                    text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
                }
            }
            return text.isEmpty ? "body" : "'\(text)'"
        }
        switch error {
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            let underlying = context.underlyingError.map { ": \($0.localizedDescription)" } ?? ""
            return "invalid JSON in request body\(underlying)"
        case .dataCorrupted(let context):
            return "invalid value for \(path(context.codingPath)): \(context.debugDescription)"
        case .keyNotFound(let key, let context):
            return "missing field \(path(context.codingPath, key))"
        case .typeMismatch(let type, let context):
            return "wrong type for \(path(context.codingPath)): expected \(Self.jsonTypeName(type))"
        case .valueNotFound(let type, let context):
            return "\(path(context.codingPath)) must not be null (expected \(Self.jsonTypeName(type)))"
        @unknown default:
            return "invalid request body: \(error)"
        }
    }

    private static func jsonTypeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "a boolean"
        case is [Any].Type: return "an array"
        default:
            let name = "\(type)"
            return name.hasPrefix("Array") ? "an array" : (name.contains("Dictionary") || name.contains("Keyed")) ? "an object" : name
        }
    }
}
