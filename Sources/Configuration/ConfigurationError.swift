import Foundation

/// A configuration value llmq cannot use: which key, where it came from, and what is wrong.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public let key: String
    /// `config file PATH`, `environment LLMQ_X` or `flag --x`; empty for a key that is missing.
    public let source: String
    public let problem: String

    public init(key: String, source: String, problem: String) {
        self.key = key
        self.source = source
        self.problem = problem
    }

    /// The error for `key`, its source given as a ``ConfigurationSource``.
    init(_ key: String, _ source: ConfigurationSource, _ problem: String) {
        self.init(key: key, source: source.description, problem: problem)
    }

    public var description: String {
        source.isEmpty ? "\(key): \(problem)" : "\(key) (from \(source)): \(problem)"
    }
}

/// Where a value came from, as the one-line error and `--print-config` name it.
public enum ConfigurationSource: Sendable, Hashable, CustomStringConvertible {
    case defaultValue
    case file(String)
    case environment(String)
    case flag(String)

    public var description: String {
        switch self {
        case .defaultValue: "default"
        case .file(let path): "config file \(path)"
        case .environment(let name): "environment \(name)"
        case .flag(let flag): "flag \(flag)"
        }
    }
}

func urlHoldsPassword(_ value: Any) -> Bool {
    guard let text = value as? String, let password = URLComponents(string: text)?.password else { return false }
    return !password.isEmpty
}

package func jsonErrorSummary(_ error: any Error) -> String {
    if case DecodingError.dataCorrupted(let context) = error {
        let underlying = (context.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String
        return underlying ?? context.debugDescription
    }
    return "\(error)"
}

/// A file key's likely meaning: a known key with the same last component, in any case.
func suggestion(for key: String, among known: Set<String>) -> String {
    let leaf = key.split(separator: ".").last.map(String.init)?.lowercased() ?? key
    let close = known.filter { $0.split(separator: ".").last.map(String.init)?.lowercased() == leaf }
    if let match = close.sorted().first { return "; did you mean \"\(match)\"?" }
    return ""
}

/// The candidate a mistyped key most likely meant: the same but for case, else one at most two
/// edits away.
func closest(to word: String, among candidates: [String]) -> String? {
    if let same = candidates.first(where: { $0.lowercased() == word.lowercased() }) { return same }
    // Levenshtein distance, one row at a time.
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var row = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var diagonal = row[0]
            row[0] = i + 1
            for (j, y) in b.enumerated() {
                let above = row[j + 1]
                row[j + 1] = min(above + 1, row[j] + 1, diagonal + (x == y ? 0 : 1))
                diagonal = above
            }
        }
        return row[b.count]
    }
    let scored = candidates.map { ($0, distance(Array(word.lowercased()), Array($0.lowercased()))) }.filter { $0.1 <= 2 }
    return scored.min { $0.1 < $1.1 }?.0
}
