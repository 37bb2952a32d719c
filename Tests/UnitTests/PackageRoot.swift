import Foundation

/// The package's root folder, for tests that read its files (deploy/, config/, README.md).
let packageRoot = URL(fileURLWithPath: #filePath)  // Tests/UnitTests/PackageRoot.swift
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
