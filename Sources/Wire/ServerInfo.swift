/// llama-server's `GET /props`, the fields llmq reads or the simulator writes.
public struct LlamaServerProps: Sendable, Hashable, Codable {
    /// How many requests the server runs at once (its `--parallel`).
    public var totalSlots: Int?
    public var modelPath: String?
    public var buildInfo: String?
    public var defaultGenerationSettings: GenerationSettings?

    /// `default_generation_settings`.
    public struct GenerationSettings: Sendable, Hashable, Codable {
        public var nCtx: Int?

        public init(nCtx: Int?) {
            self.nCtx = nCtx
        }

        private enum CodingKeys: String, CodingKey {
            case nCtx = "n_ctx"
        }
    }

    public init(totalSlots: Int?, modelPath: String? = nil, buildInfo: String? = nil, defaultGenerationSettings: GenerationSettings? = nil) {
        self.totalSlots = totalSlots
        self.modelPath = modelPath
        self.buildInfo = buildInfo
        self.defaultGenerationSettings = defaultGenerationSettings
    }

    private enum CodingKeys: String, CodingKey {
        case totalSlots = "total_slots"
        case modelPath = "model_path"
        case buildInfo = "build_info"
        case defaultGenerationSettings = "default_generation_settings"
    }
}

/// `GET /v1/models`: `{"object": "list", "data": [...]}`.
public struct OpenAIModelList: Sendable, Hashable, Codable {
    public var object: String?
    public var data: [Model]

    /// One model the server offers.
    public struct Model: Sendable, Hashable, Codable {
        public var id: String
        public var object: String?
        /// Unix seconds.
        public var created: Int64?
        public var ownedBy: String?

        public init(id: String, object: String? = "model", created: Int64? = nil, ownedBy: String? = nil) {
            self.id = id
            self.object = object
            self.created = created
            self.ownedBy = ownedBy
        }

        private enum CodingKeys: String, CodingKey {
            case id, object, created
            case ownedBy = "owned_by"
        }
    }

    public init(object: String? = "list", data: [Model]) {
        self.object = object
        self.data = data
    }
}

/// Ollama's `GET /api/tags`: `{"models": [...]}`.
public struct OllamaTagList: Sendable, Hashable, Codable {
    public var models: [Model]

    /// One local model.
    public struct Model: Sendable, Hashable, Codable {
        /// `name:tag`.
        public var name: String
        public var model: String?
        /// RFC 3339.
        public var modifiedAt: String?
        /// Bytes.
        public var size: Int64?
        public var digest: String?
        public var details: Details?

        public init(name: String, model: String? = nil, modifiedAt: String? = nil, size: Int64? = nil, digest: String? = nil, details: Details? = nil) {
            self.name = name
            self.model = model
            self.modifiedAt = modifiedAt
            self.size = size
            self.digest = digest
            self.details = details
        }

        private enum CodingKeys: String, CodingKey {
            case name, model
            case modifiedAt = "modified_at"
            case size, digest, details
        }
    }

    /// A model's `details`.
    public struct Details: Sendable, Hashable, Codable {
        public var parentModel: String?
        public var format: String?
        public var family: String?
        public var families: [String]?
        public var parameterSize: String?
        public var quantizationLevel: String?

        public init(
            parentModel: String? = nil,
            format: String? = nil,
            family: String? = nil,
            families: [String]? = nil,
            parameterSize: String? = nil,
            quantizationLevel: String? = nil
        ) {
            self.parentModel = parentModel
            self.format = format
            self.family = family
            self.families = families
            self.parameterSize = parameterSize
            self.quantizationLevel = quantizationLevel
        }

        private enum CodingKeys: String, CodingKey {
            case parentModel = "parent_model"
            case format, family, families
            case parameterSize = "parameter_size"
            case quantizationLevel = "quantization_level"
        }
    }

    public init(models: [Model]) {
        self.models = models
    }
}
