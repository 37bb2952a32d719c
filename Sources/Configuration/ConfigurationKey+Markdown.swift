extension ConfigurationKey {
    /// The README's configuration table, from the registry: one row per key (the `fallback.*`
    /// keys in one row, as they repeat `backend.*`). `llmq worker --print-keys-markdown`
    /// prints it; a unit test holds the README to it.
    public static func markdownTable() -> String {
        var rows = ["| key | flag | default | values | what it does |", "|---|---|---|---|---|"]
        var fallbackShown = false
        for key in all {
            var name = key.name
            var values = key.values.markdown
            if name.hasPrefix("fallback.") {
                if fallbackShown { continue }
                fallbackShown = true
                name = "fallback.*"
                values = "as `backend.*`"
            }
            let cells = [
                "`\(name)`", key.flag.map { "`\($0)`" } ?? "", Self.markdown(default: key.defaultText), values, key.help,
            ]
            rows.append("| " + cells.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |")
        }
        return rows.joined(separator: "\n") + "\n"
    }

    private static func markdown(default text: String) -> String {
        text.hasPrefix("(") || text.contains(" ") ? text : "`\(text)`"
    }
}

extension ConfigurationKey.Values {
    /// What the README's table says a key takes.
    var markdown: String {
        let number = LoadedConfiguration.number
        switch self {
        case .text: return "text"
        case .name: return "text, not empty"
        case .whole(let range): return "whole number, \(range.lowerBound)...\(range.upperBound)"
        case .number(let range): return "number, \(number(range.lowerBound))...\(number(range.upperBound))"
        case .numberAtLeast(let minimum): return "number >= \(number(minimum))"
        case .duration(let range, let unit):
            return "\(unit == 1 ? "seconds" : "milliseconds"), \(number(range.lowerBound))...\(number(range.upperBound))"
        case .bool: return "true or false"
        case .list: return "names (a list, or comma-separated)"
        case .choice(let names): return names.map { "`\($0)`" }.joined(separator: ", ")
        case .structured: return "see below"
        }
    }
}
