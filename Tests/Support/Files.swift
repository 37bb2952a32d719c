import Foundation

/// The package's root folder, for tests that read its files (config/, deploy/, scripts/, README.md).
public let packageRoot = URL(fileURLWithPath: #filePath)  // Tests/Support/Files.swift
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The example configuration files in config/.
public let configDirectory = packageRoot.appendingPathComponent("config")

/// Writes `text` to a new file in the temporary directory, `<prefix>-<UUID>.<suffix>`; returns its path.
public func temporaryFile(_ text: String, prefix: String, suffix: String = "json") throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString).\(suffix)").path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// A test's own failure with what went wrong, for helpers that cannot `#expect`.
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
