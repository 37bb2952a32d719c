// swift-tools-version: 6.1
// A standalone reproducer of the llmq release-build trap (see ../MISCOMPILE.md).
// No dependencies beyond the standard library and Synchronization.
import PackageDescription

let package = Package(
    name: "miscompile",
    platforms: [.macOS(.v15)],
    targets: [
        // Slots' layout depends on a resilient type (CheckedContinuation): miscompiled at -O.
        .executableTarget(name: "MiscompileRepro", path: "Sources/MiscompileRepro"),
        // The same without any lock: the miscompile is not about Mutex.
        .executableTarget(name: "NoLock", path: "Sources/NoLock"),
        // The same code with a State of fixed layout: the control, not miscompiled.
        .executableTarget(name: "FixedLayoutControl", path: "Sources/FixedLayoutControl"),
    ]
)
