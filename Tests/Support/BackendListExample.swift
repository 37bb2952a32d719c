/// A configuration file with three named backends (weights, slots, models) and a fallback whose
/// API key is in a file of its own: what the lists of backends are tested with, loaded and printed.
public enum BackendListExample {
    public static let text = """
        {"backends": [
           {"name": "gpu-a", "type": "llama-cpp", "endpoint": "http://10.0.0.1:8080", "slots": 8, "weight": 2},
           {"name": "gpu-b", "type": "llama-cpp", "endpoint": "http://10.0.0.2:8080", "slots": 4},
           {"name": "new-model", "type": "ollama", "endpoint": "http://10.0.0.3:11434", "models": ["qwen2.5:7b-instruct-q4_K_M"], "weight": 0.1}
         ],
         "fallbacks": [ {"name": "cloud", "type": "openai", "endpoint": "https://api.example.com", "model": "gpt-4o-mini", "apiKeyFile": "KEYFILE"} ]}
        """

    /// Writes the example, and `key` as its fallback's key file; returns the example's path.
    public static func file(key: String = "sk-from-file") throws -> String {
        let keyFile = try temporaryFile(key + "\n", prefix: "llmq-backends", suffix: "key")
        return try temporaryFile(text.replacingOccurrences(of: "KEYFILE", with: keyFile), prefix: "llmq-backends")
    }
}
