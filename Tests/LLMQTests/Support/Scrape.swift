import Foundation
import LLMQHTTP
import LLMQTestSupport

/// One sample of a Prometheus text exposition: `name{labels} value`.
struct MetricSample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// A parsed `/metrics` page, with the raw text kept for `promtool`.
struct Scrape {
    let text: String
    let samples: [MetricSample]

    /// Families named by `# HELP` lines.
    var helpedFamilies: Set<String> {
        Set(text.split(separator: "\n").compactMap { line in
            line.hasPrefix("# HELP ") ? line.split(separator: " ").dropFirst(2).first.map(String.init) : nil
        })
    }

    /// The sum of the samples named `name` whose labels include `matching`; nil when none.
    func value(_ name: String, _ matching: [String: String] = [:]) -> Double? {
        let chosen = samples.filter { sample in
            sample.name == name && matching.allSatisfy { sample.labels[$0.key] == $0.value }
        }
        return chosen.isEmpty ? nil : chosen.reduce(0) { $0 + $1.value }
    }

    /// Parses the text format's sample lines (label values as swift-prometheus escapes them).
    init(text: String) throws {
        self.text = text
        var samples: [MetricSample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.isEmpty {
            var name = ""
            var labels: [String: String] = [:]
            var rest = Substring(line)
            if let brace = line.firstIndex(of: "{") {
                name = String(line[..<brace])
                guard let close = line.lastIndex(of: "}") else { throw TestFailure("bad sample line: \(line)") }
                var body = line[line.index(after: brace)..<close]
                while !body.isEmpty {
                    guard let equals = body.firstIndex(of: "=") else { throw TestFailure("bad labels: \(line)") }
                    let key = String(body[..<equals]).trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                    var index = body.index(equals, offsetBy: 2)  // past ="
                    var value = ""
                    while index < body.endIndex, body[index] != "\"" {
                        if body[index] == "\\" { index = body.index(after: index) }
                        value.append(body[index])
                        index = body.index(after: index)
                    }
                    labels[key] = value
                    body = body[body.index(after: index)...]
                }
                rest = line[line.index(after: close)...]
            } else {
                let parts = line.split(separator: " ")
                name = String(parts[0])
                rest = parts.dropFirst().first ?? ""
            }
            guard let value = Double(rest.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") else {
                throw TestFailure("bad value: \(line)")
            }
            samples.append(MetricSample(name: name, labels: labels, value: value))
        }
        self.samples = samples
    }

    /// `GET http://127.0.0.1:port/metrics`.
    static func take(port: Int) async throws -> Scrape {
        let (status, body) = try await httpGet("http://127.0.0.1:\(port)/metrics")
        guard status == 200 else { throw TestFailure("/metrics answered \(status)") }
        return try Scrape(text: body)
    }
}

func httpGet(_ url: String) async throws -> (status: Int, body: String) {
    let response = try await LLMQHTTPClientForTests.shared.execute(.init(method: .get, url: url, headers: [], body: nil, timeout: .seconds(10)))
    return (response.status, String(decoding: response.body, as: UTF8.self))
}

/// Runs `promtool check metrics` on a scrape; returns its exit status and what it printed.
func promtoolCheckMetrics(_ text: String) async throws -> (status: Int32, output: String) {
    _ = try executable("promtool")  // a clear failure when Debian's prometheus package is missing
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("scrape-\(UUID().uuidString).txt")
    try text.write(to: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    let result = try await runProgram("/bin/sh", ["-c", "promtool check metrics < \"$0\"", file.path])
    return (result.status, result.output + result.error)
}

/// Waits until `GET url` answers `status`.
func waitForHTTP(_ url: String, status: Int, timeout: Duration = .seconds(20)) async throws -> String {
    let deadline = ContinuousClock.now + timeout
    var last = "no answer"
    while ContinuousClock.now < deadline {
        if let answer = try? await httpGet(url) {
            if answer.status == status { return answer.body }
            last = "\(answer.status) \(answer.body)"
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("\(url) did not answer \(status) within \(timeout); last: \(last)")
}
