import Foundation
import LLMQWire
import Testing

private func decode<T: Decodable>(_ type: T.Type, _ json: String) throws -> T {
    try JSONDecoder().decode(type, from: Data(json.utf8))
}

private func roundTrip<T: Codable & Equatable>(_ value: T) throws -> T {
    try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
}

/// JSON with sorted keys: Foundation's encoder writes keys in no fixed order on Linux.
private func encoded(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

@Suite("OpenAI wire bodies")
struct OpenAIWireTests {
    @Test("a request with content parts, stop as a string, and numbers at their edges")
    func requestWithPartsAndEdges() throws {
        let request = try decode(
            OpenAIChatRequest.self,
            #"""
            {"model":"llama","messages":[
              {"role":"system","content":"be brief"},
              {"role":"user","content":[{"type":"text","text":"hello"},{"type":"image_url","image_url":{"url":"data:"}},{"type":"text","text":"there"}]},
              {"role":"assistant","content":null},
              {"role":"tool"}],
             "max_tokens":16,"temperature":0,"top_p":1,"top_k":0,"seed":9223372036854775807,"stop":"\n\n","stream":true,
             "stream_options":{"include_usage":true}}
            """#
        )
        #expect(request.model == "llama")
        #expect(request.messages.map(\.role) == ["system", "user", "assistant", "tool"])
        #expect(request.messages.map(\.text) == ["be brief", "hello\nthere", "", ""])
        #expect(request.messages[2].content == nil)
        #expect(request.maxTokens == 16)
        #expect(request.temperature == 0)
        #expect(request.topK == 0)
        #expect(request.seed == Int64.max)
        #expect(request.stop == ["\n\n"])
        #expect(request.stream == true)
        #expect(request.streamOptions?.includeUsage == true)
    }

    @Test("stop as an array, null, or missing; other optional fields missing")
    func stopForms() throws {
        let array = try decode(OpenAIChatRequest.self, #"{"messages":[],"stop":["a","b"],"seed":-9223372036854775808}"#)
        #expect(array.stop == ["a", "b"])
        #expect(array.seed == Int64.min)
        let null = try decode(OpenAIChatRequest.self, #"{"messages":[{"role":"user","content":"hi"}],"stop":null}"#)
        #expect(null.stop == nil)
        #expect(null.model == nil && null.maxTokens == nil && null.topK == nil && null.seed == nil && null.stream == nil)
        let limits = try decode(OpenAIChatRequest.self, #"{"messages":[],"max_completion_tokens":5,"n_predict":-1}"#)
        #expect(limits.maxCompletionTokens == 5 && limits.nPredict == -1)
    }

    @Test(
        "malformed requests throw",
        arguments: [
            #"{"model":"m"}"#,  // no messages
            #"{"messages":[{"content":"hi"}]}"#,  // a message without a role
            #"{"messages":[{"role":"user","content":5}]}"#,
            #"{"messages":[],"top_k":40.5}"#,
            #"{"messages":[],"seed":9223372036854775808}"#,
            #"{"messages":[],"seed":"1"}"#,
            #"{"messages":[],"stop":[1]}"#,
            #"{"messages":[],"max_tokens":"8"}"#,
            #"{"messages":[]"#,
            "",
        ])
    func malformedRequests(body: String) {
        #expect(throws: (any Error).self) { try decode(OpenAIChatRequest.self, body) }
    }

    @Test("requests survive encoding and decoding, nil fields left out")
    func requestRoundTrip() throws {
        let full = OpenAIChatRequest(
            model: "m",
            messages: [ChatMessageBody(role: "user", text: "hi"), ChatMessageBody(role: "user", content: .parts([ContentPart(text: "a"), ContentPart(type: "image_url", text: nil)]))],
            maxTokens: 8, temperature: 0.7, topP: 0.95, topK: 40, seed: .max, stop: ["x"], stream: true,
            streamOptions: .init(includeUsage: true), maxCompletionTokens: 9, nPredict: 10
        )
        #expect(try roundTrip(full) == full)
        let bare = OpenAIChatRequest(messages: [ChatMessageBody(role: "user", text: "hi")])
        #expect(try roundTrip(bare) == bare)
        #expect(try encoded(bare) == #"{"messages":[{"content":"hi","role":"user"}]}"#)
    }

    @Test("the request a backend sends: fields and number forms")
    func backendRequestBytes() throws {
        let request = OpenAIChatRequest(
            model: "m", messages: [ChatMessageBody(role: "user", text: "hi")], maxTokens: 8, temperature: 0.5, topP: 1,
            topK: 40, seed: 42, stop: ["a"], stream: true, streamOptions: .init(includeUsage: true)
        )
        #expect(
            try encoded(request)
                == #"{"max_tokens":8,"messages":[{"content":"hi","role":"user"}],"model":"m","seed":42,"stop":["a"],"stream":true,"stream_options":{"include_usage":true},"temperature":0.5,"top_k":40,"top_p":1}"#
        )
    }

    @Test("a whole llama-server answer with usage and timings")
    func response() throws {
        let response = try decode(
            OpenAIChatResponse.self,
            #"""
            {"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant","content":"the fox"}}],
             "created":1735689600,"model":"sim","system_fingerprint":"b0","object":"chat.completion","id":"chatcmpl-1",
             "usage":{"completion_tokens":2,"prompt_tokens":5,"total_tokens":7},
             "timings":{"prompt_n":5,"prompt_ms":1.5,"prompt_per_token_ms":0.3,"prompt_per_second":3333.3,
                        "predicted_n":2,"predicted_ms":20,"predicted_per_token_ms":10,"predicted_per_second":100}}
            """#
        )
        #expect(response.choices.first?.message?.content == "the fox")
        #expect(response.choices.first?.finishReason == "length")
        #expect(response.usage == OpenAIUsage(promptTokens: 5, completionTokens: 2, totalTokens: 7))
        #expect(response.timings?.promptMs == 1.5)
        #expect(response.timings?.predictedPerSecond == 100)
        #expect(response.created == 1_735_689_600)
        #expect(try roundTrip(response) == response)
    }

    @Test("an answer from a server that sends only choices; one without choices throws")
    func sparseResponse() throws {
        let sparse = try decode(OpenAIChatResponse.self, #"{"choices":[{"message":{"content":"hi"}}]}"#)
        #expect(sparse.choices.first?.message?.content == "hi")
        #expect(sparse.model == nil && sparse.usage == nil && sparse.timings == nil)
        #expect(throws: (any Error).self) { try decode(OpenAIChatResponse.self, #"{"model":"m"}"#) }
        #expect(throws: (any Error).self) { try decode(OpenAIChatResponse.self, #"{"choices":{}}"#) }
    }

    @Test("stream chunks: first with the role, deltas, the last with usage and timings, an error event")
    func chunks() throws {
        let first = try decode(OpenAIChatChunk.self, #"{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"object":"chat.completion.chunk"}"#)
        #expect(first.choices?.first?.delta == AnswerMessage(role: "assistant", content: nil))
        #expect(first.choices?.first?.finishReason == nil)
        let delta = try decode(OpenAIChatChunk.self, #"{"choices":[{"index":0,"delta":{"content":" fox"}}],"model":"m"}"#)
        #expect(delta.choices?.first?.delta?.content == " fox")
        let last = try decode(OpenAIChatChunk.self, #"{"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"usage":{"prompt_tokens":3,"completion_tokens":2},"timings":{"predicted_ms":4.5}}"#)
        #expect(last.choices?.first?.finishReason == "stop")
        #expect(last.usage?.completionTokens == 2)
        #expect(last.timings?.predictedMs == 4.5)
        let usageOnly = try decode(OpenAIChatChunk.self, #"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#)
        #expect(usageOnly.choices == [] && usageOnly.usage?.totalTokens == 5)
        let error = try decode(OpenAIChatChunk.self, #"{"error":{"code":500,"message":"boom","type":"server_error"}}"#)
        #expect(error.error == OpenAIError(code: .number(500), message: "boom", type: "server_error"))
        for chunk in [first, delta, last, usageOnly, error] {
            #expect(try roundTrip(chunk) == chunk)
        }
        #expect(throws: (any Error).self) { try decode(OpenAIChatChunk.self, #"{"choices":[{"delta":"text"}]}"#) }
    }

    @Test("what a worker reads of an answer agrees with the whole types, for whole answers and every kind of chunk")
    func readings() throws {
        let whole = #"""
            {"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant","content":"the fox"}}],
             "created":1735689600,"model":"sim","usage":{"completion_tokens":2,"prompt_tokens":5,"total_tokens":7},
             "timings":{"prompt_n":5,"prompt_ms":1.5,"predicted_n":2,"predicted_ms":20,"predicted_per_second":100}}
            """#
        let full = try decode(OpenAIChatResponse.self, whole)
        let read = try decode(OpenAIAnswerReading.Whole.self, whole)
        #expect(read.choices.map(\.message?.content) == full.choices.map(\.message?.content))
        #expect(read.choices.map(\.finishReason) == full.choices.map(\.finishReason))
        #expect(read.model == full.model && read.usage?.promptTokens == full.usage?.promptTokens)
        #expect(read.usage?.completionTokens == full.usage?.completionTokens)
        #expect(read.timings?.promptMs == full.timings?.promptMs && read.timings?.predictedMs == full.timings?.predictedMs)
        #expect(read.timings?.predictedPerSecond == full.timings?.predictedPerSecond)
        #expect(throws: (any Error).self) { try decode(OpenAIAnswerReading.Whole.self, #"{"model":"m"}"#) }
        for chunk in [
            #"{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}]}"#,
            #"{"choices":[{"index":0,"delta":{"content":" fox"}}],"model":"m"}"#,
            #"{"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"usage":{"prompt_tokens":3,"completion_tokens":2},"timings":{"predicted_ms":4.5}}"#,
            #"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
            #"{"error":{"code":500,"message":"boom","type":"server_error"}}"#,
        ] {
            let full = try decode(OpenAIChatChunk.self, chunk)
            let read = try decode(OpenAIAnswerReading.self, chunk)
            #expect(read.choices?.map(\.delta?.content) == full.choices?.map(\.delta?.content), "\(chunk)")
            #expect(read.choices?.map(\.finishReason) == full.choices?.map(\.finishReason), "\(chunk)")
            #expect(read.model == full.model && read.usage?.completionTokens == full.usage?.completionTokens, "\(chunk)")
            #expect(read.timings?.predictedMs == full.timings?.predictedMs && read.error == full.error, "\(chunk)")
        }
        #expect(throws: (any Error).self) { try decode(OpenAIAnswerReading.self, #"{"choices":[{"delta":"text"}]}"#) }
    }

    @Test("error bodies: llama-server's numeric code, OpenAI's string or null code")
    func errors() throws {
        let llama = try decode(OpenAIErrorBody.self, #"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error","n_prompt_tokens":9,"n_ctx":8}}"#)
        #expect(llama.error.code == .number(400))
        #expect(llama.error.type == "exceed_context_size_error")
        let openAI = try decode(OpenAIErrorBody.self, #"{"error":{"message":"Incorrect API key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#)
        #expect(openAI.error.code == .text("invalid_api_key"))
        #expect(openAI.error.param == nil)
        let noCode = try decode(OpenAIErrorBody.self, #"{"error":{"message":"m","code":null}}"#)
        #expect(noCode.error.code == nil)
        #expect(try roundTrip(llama) == llama)
        #expect(try roundTrip(openAI) == openAI)
        #expect(throws: (any Error).self) { try decode(OpenAIErrorBody.self, #"{"error":"text"}"#) }
    }

    @Test("llama-server's /props and /v1/models")
    func serverInfo() throws {
        let props = try decode(LlamaServerProps.self, #"{"default_generation_settings":{"n_ctx":4096,"params":{"n_predict":-1}},"total_slots":4,"model_path":"/models/m.gguf","build_info":"b1"}"#)
        #expect(props.totalSlots == 4)
        #expect(props.defaultGenerationSettings?.nCtx == 4096)
        #expect(try roundTrip(props) == props)
        #expect(try decode(LlamaServerProps.self, "{}").totalSlots == nil)
        let models = try decode(OpenAIModelList.self, #"{"object":"list","data":[{"id":"m","object":"model","created":1735689600,"owned_by":"llamacpp"}]}"#)
        #expect(models.data.map(\.id) == ["m"])
        #expect(models.data.first?.ownedBy == "llamacpp")
        #expect(try roundTrip(models) == models)
        #expect(throws: (any Error).self) { try decode(OpenAIModelList.self, #"{"data":[{"object":"model"}]}"#) }
    }
}

@Suite("Ollama wire bodies")
struct OllamaWireTests {
    @Test("a chat request with options at their edges")
    func request() throws {
        let request = try decode(
            OllamaChatRequest.self,
            #"{"model":"llama3","messages":[{"role":"user","content":"hi","images":[]}],"stream":false,"options":{"num_predict":-2,"num_ctx":8192,"temperature":0.8,"top_p":0.9,"top_k":0,"seed":9223372036854775807,"stop":["\n"]}}"#
        )
        #expect(request.model == "llama3")
        #expect(request.messages?.first?.text == "hi")
        #expect(request.stream == false)
        #expect(request.options == OllamaOptions(numPredict: -2, temperature: 0.8, topP: 0.9, topK: 0, seed: .max, stop: ["\n"], numCtx: 8192))
        let bare = try decode(OllamaChatRequest.self, #"{"model":"m"}"#)
        #expect(bare.messages == nil && bare.stream == nil && bare.options == nil)
        let stopString = try decode(OllamaChatRequest.self, #"{"model":"m","options":{"stop":"END"}}"#)
        #expect(stopString.options?.stop == ["END"])
    }

    @Test("malformed requests throw", arguments: [#"{"model":5}"#, #"{"options":{"top_k":1.5}}"#, #"{"options":{"seed":1e30}}"#, #"{"messages":{}}"#, "[]"])
    func malformedRequests(body: String) {
        #expect(throws: (any Error).self) { try decode(OllamaChatRequest.self, body) }
    }

    @Test("the request a backend sends, empty options included")
    func backendRequestBytes() throws {
        let request = OllamaChatRequest(model: "m", messages: [ChatMessageBody(role: "user", text: "hi")], stream: false, options: OllamaOptions())
        #expect(try encoded(request) == #"{"messages":[{"content":"hi","role":"user"}],"model":"m","options":{},"stream":false}"#)
        let full = OllamaChatRequest(
            model: "m", messages: [ChatMessageBody(role: "user", text: "hi")], stream: true,
            options: OllamaOptions(numPredict: 8, temperature: 0.5, topP: 1, topK: 40, seed: -1, stop: ["a", "b"])
        )
        #expect(
            try encoded(full)
                == #"{"messages":[{"content":"hi","role":"user"}],"model":"m","options":{"num_predict":8,"seed":-1,"stop":["a","b"],"temperature":0.5,"top_k":40,"top_p":1},"stream":true}"#
        )
        #expect(try roundTrip(full) == full)
    }

    @Test("streamed lines, the done line with counts and durations, an error line")
    func responses() throws {
        let piece = try decode(OllamaChatResponse.self, #"{"model":"m","created_at":"2025-01-02T03:04:05.123456789Z","message":{"role":"assistant","content":"Hel"},"done":false}"#)
        #expect(piece.message?.content == "Hel" && piece.done == false)
        let done = try decode(
            OllamaChatResponse.self,
            #"{"model":"m","created_at":"2025-01-02T03:04:05Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":9223372036854775807,"load_duration":0,"prompt_eval_count":7,"prompt_eval_duration":1000000,"eval_count":2,"eval_duration":4000000}"#
        )
        #expect(done.done == true && done.doneReason == "stop")
        #expect(done.promptEvalCount == 7 && done.evalCount == 2)
        #expect(done.totalDuration == .max && done.evalDuration == 4_000_000)
        let noRole = try decode(OllamaChatResponse.self, #"{"model":"m","message":{"content":"cut off"},"done":false}"#)
        #expect(noRole.message?.content == "cut off" && noRole.message?.role == nil)
        let error = try decode(OllamaChatResponse.self, #"{"error":"model runner has unexpectedly stopped"}"#)
        #expect(error.error == "model runner has unexpectedly stopped" && error.done == nil)
        for response in [piece, done, noRole, error] {
            #expect(try roundTrip(response) == response)
        }
        #expect(throws: (any Error).self) { try decode(OllamaChatResponse.self, #"{"done":"yes"}"#) }
        #expect(throws: (any Error).self) { try decode(OllamaChatResponse.self, #"{"eval_duration":1.5}"#) }
    }

    @Test("the error body and /api/tags")
    func errorAndTags() throws {
        let error = try decode(OllamaErrorBody.self, #"{"error":"model \"x\" not found, try pulling it first"}"#)
        #expect(error.error == #"model "x" not found, try pulling it first"#)
        #expect(try roundTrip(error) == error)
        #expect(throws: (any Error).self) { try decode(OllamaErrorBody.self, #"{"error":{"message":"m"}}"#) }
        let tags = try decode(
            OllamaTagList.self,
            #"{"models":[{"name":"sim:latest","model":"sim:latest","modified_at":"2025-01-02T03:04:05Z","size":1000000,"digest":"ab","details":{"parent_model":"","format":"gguf","family":"sim","families":["sim"],"parameter_size":"1M","quantization_level":"Q8_0"}}]}"#
        )
        #expect(tags.models.first?.name == "sim:latest")
        #expect(tags.models.first?.details?.quantizationLevel == "Q8_0")
        #expect(try roundTrip(tags) == tags)
        #expect(try decode(OllamaTagList.self, #"{"models":[]}"#).models.isEmpty)
    }
}
