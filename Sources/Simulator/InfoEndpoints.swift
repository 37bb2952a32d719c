import Hummingbird

// llama-server's and Ollama's informational endpoints: /slots, /props, /v1/models, /api/tags.
extension SimulatorResponder {
    func slots() -> Response {
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

    func props() -> Response {
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

    func modelList() -> Response {
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

    func tags() -> Response {
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
}
