import Foundation
@testable import LLMQBackends
@testable import LLMQHTTP
import Synchronization
import Testing

/// A streamed answer through a backend, against bytes a server might send.
private func stream(
    _ kind: BackendConfiguration.Kind, body: String, status: Int = 200, headers: [(String, String)] = []
) async throws -> (result: Result<ChatCompletion, BackendError>, texts: [String]) {
    let bytes = Array(body.utf8)
    let server = try ScriptedHTTPServer { _, _ in
        .respond(httpResponse(status: status, headers: [("Content-Type", "text/event-stream")] + headers, body: bytes))
    }
    defer { server.stop() }
    var configuration = BackendConfiguration(kind: kind, endpoint: server.url, model: "m")
    configuration.requestTimeout = .seconds(5)
    let backend = try makeChatBackend(configuration, maxConcurrentRequests: 2)
    defer { backend.shutdown() }
    let texts = Mutex<[String]>([])
    let request = ChatRequest(messages: [ChatMessage(role: .user, content: "hi")], maxTokens: 8)
    do {
        let completion = try await backend.complete(request) { text in texts.withLock { $0.append(text) } }
        return (.success(completion), texts.withLock { $0 })
    } catch {
        return (.failure(error), texts.withLock { $0 })
    }
}

@Suite("Backends: streamed answers as servers send them, well-formed or not")
struct BackendStreamingTests {
    @Test("llama-server SSE: role chunk, deltas, finish with usage and timings, [DONE]")
    func llamaServerStream() async throws {
        let body = """
            data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"object":"chat.completion.chunk"}

            data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hel"}}]}

            data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"lo ✓"}}]}

            data: {"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"model":"tiny","usage":{"completion_tokens":2,"prompt_tokens":5,"total_tokens":7},"timings":{"prompt_ms":1.5,"predicted_ms":4.25,"predicted_per_second":470.5}}

            data: [DONE]


            """
        let (result, texts) = try await stream(.llamaCpp, body: body)
        let completion = try result.get()
        #expect(texts == ["Hel", "lo ✓"])
        #expect(completion.content == "Hello ✓" && completion.finishReason == "stop" && completion.model == "tiny")
        #expect(completion.promptTokens == 5 && completion.completionTokens == 2)
        #expect(completion.promptMilliseconds == 1.5 && completion.generationMilliseconds == 4.25 && completion.tokensPerSecond == 470.5)
        #expect(completion.firstTokenMilliseconds != nil)
    }

    @Test("OpenAI SSE: usage in a chunk of its own with no choices, CRLF lines, comments, event lines, no space after data:")
    func openAIStream() async throws {
        let body = [
            ": keep-alive", "", "event: message",
            #"data:{"choices":[{"index":0,"delta":{"content":"a"}}]}"#, "",
            #"data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"length"}]}"#, "",
            #"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#, "",
            "data: [DONE]", "", "",
        ].joined(separator: "\r\n")
        let (result, texts) = try await stream(.openAI, body: body)
        let completion = try result.get()
        #expect(texts == ["a", "b"] && completion.content == "ab")
        #expect(completion.finishReason == "length" && completion.promptTokens == 3 && completion.completionTokens == 2)
    }

    @Test(
        "A stream that breaks: an error event, llama-server's error: line, no end, not JSON",
        arguments: [
            (#"data: {"choices":[{"delta":{"content":"x"}}]}\#n\#ndata: {"error":{"code":500,"message":"boom","type":"server_error"}}\#n\#n"#, "backend_error", "boom"),
            (#"data: {"choices":[{"delta":{"content":"x"}}]}\#n\#nerror: {"code":500,"message":"slot died","type":"server_error"}\#n\#n"#, "backend_error", "slot died"),
            (#"data: {"choices":[{"delta":{"content":"x"}}]}\#n\#n"#, "backend_bad_response", "before the answer was finished"),
            ("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {not json\n\n", "backend_bad_response", "not a chat completion chunk"),
            (#"{"error":{"message":"plain JSON, no events","type":"x"}}"#, "backend_bad_response", "before the answer was finished"),
        ])
    func brokenStreams(body: String, code: String, message: String) async throws {
        let (result, _) = try await stream(.llamaCpp, body: body)
        guard case .failure(let error) = result else {
            Issue.record("a broken stream must fail")
            return
        }
        #expect(error.code.rawValue == code && error.message.contains(message), "\(error.code): \(error.message)")
    }

    @Test("An error status in streaming mode: classified as without streaming, Retry-After honoured")
    func errorStatus() async throws {
        let (result, _) = try await stream(
            .llamaCpp, body: #"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#, status: 503,
            headers: [("Retry-After", "2")])
        guard case .failure(let error) = result else {
            Issue.record("503 must fail")
            return
        }
        #expect(error.code == .busy && error.retryAfter == .seconds(2))
    }

    @Test("Ollama NDJSON: pieces, done with counts; an error line and a missing done fail")
    func ollamaStreams() async throws {
        let good = """
            {"model":"m","message":{"role":"assistant","content":"He"},"done":false}
            {"model":"m","message":{"role":"assistant","content":"y"},"done":false}
            {"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":4,"eval_count":2,"prompt_eval_duration":2000000,"eval_duration":8000000}

            """
        let (result, texts) = try await stream(.ollama, body: good)
        let completion = try result.get()
        #expect(texts == ["He", "y"] && completion.content == "Hey" && completion.finishReason == "stop")
        #expect(completion.completionTokens == 2 && completion.generationMilliseconds == 8 && completion.tokensPerSecond == 250)

        let broken = #"{"message":{"content":"x"},"done":false}"# + "\n" + #"{"error":"model runner crashed"}"# + "\n"
        let (failed, _) = try await stream(.ollama, body: broken)
        guard case .failure(let error) = failed else { Issue.record("an error line must fail"); return }
        #expect(error.code == .serverError && error.message.contains("model runner crashed"))

        let (unfinished, _) = try await stream(.ollama, body: #"{"message":{"content":"x"},"done":false}"# + "\n")
        guard case .failure(let error) = unfinished else { Issue.record("no done must fail"); return }
        #expect(error.code == .badResponse)
    }

    @Test("Lines split anywhere across pieces read the same as whole (every split point of a stream, and random splits)")
    func lineSplitting() throws {
        let text = "data: {\"a\":\"é✓\"}\r\n\r\n: c\nevent: x\ndata: [DONE]\n\nlast line without newline"
        let bytes = Array(text.utf8)
        let head = HTTPResponseHead(status: 200)
        func lines(_ pieces: [[UInt8]]) throws -> [String] {
            var result: [String] = []
            let splitter = StreamedLines { line in result.append(String(decoding: line, as: UTF8.self)) }
            for piece in pieces {
                #expect(piece.withUnsafeBytes { splitter.receive(head, $0) })
            }
            try splitter.finish()
            return result
        }
        let whole = try lines([bytes])
        #expect(whole == ["data: {\"a\":\"é✓\"}", "", ": c", "event: x", "data: [DONE]", "", "last line without newline"])
        for split in 0...bytes.count {
            #expect(try lines([Array(bytes[..<split]), Array(bytes[split...])]) == whole, "split at \(split)")
        }
        var random = SeededGenerator(seed: fuzzSeed(11, test: "lineSplitting"))
        for _ in 0..<200 {
            var pieces: [[UInt8]] = []
            var start = 0
            while start < bytes.count {
                let length = Int(random.next() % 7)
                pieces.append(Array(bytes[start..<min(bytes.count, start + length)]))
                start += length
            }
            #expect(try lines(pieces) == whole)
        }
    }

    @Test("Random garbage events: every stream ends in an answer or a classified error, never a crash")
    func garbage() async throws {
        var random = SeededGenerator(seed: fuzzSeed(12, test: "garbage"))
        let fragments = [
            "data: ", "data:", "error: ", ": ", "event: x", "[DONE]", "{", "}", "\"choices\":[", "{\"delta\":{\"content\":\"t\"}}", "]",
            "\"finish_reason\":\"stop\"", "\"usage\":{\"completion_tokens\":-1}", "null", "\u{0}", "\r", "\n", "\n\n", ",", "\"error\":{}",
            "\"timings\":{\"predicted_ms\":1e400}", "ÿ",
        ]
        var outcomes: [String: Int] = [:]
        for _ in 0..<60 {
            var body = ""
            for _ in 0..<(Int(random.next() % 30) + 1) { body += fragments[Int(random.next() % UInt64(fragments.count))] }
            let (result, _) = try await stream(random.next() % 2 == 0 ? .llamaCpp : .ollama, body: body)
            switch result {
            case .success: outcomes["ok", default: 0] += 1
            case .failure(let error): outcomes[error.code.rawValue, default: 0] += 1
            }
        }
        #expect(Set(outcomes.keys).isSubset(of: FuzzTests.backendErrorCodes.union(["ok"])), "\(outcomes)")
    }
}
