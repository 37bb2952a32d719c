// A libdispatch/Foundation use-after-free on Linux (Swift 6.3.1), found by running llmq's tests
// under MALLOC_PERTURB_: a FileHandle.readabilityHandler that is set and then cleared leaves a
// dispatch source that the manager thread reads after it was freed.
//   swiftc -O -parse-as-library docs/toolchain/readability-handler-crash.swift -o /tmp/rh
//   MALLOC_PERTURB_=165 /tmp/rh    # crashes in _dispatch_event_loop_drain (rax 0xa5a5a5a5a5a5a5a5: freed memory)
//   /tmp/rh                        # prints ok (the freed memory happens to still look valid)
// llmq's Sources never use readabilityHandler; the tests read pipes on threads of their own.
import Foundation
// Runs a short program many times, reading its output through FileHandle.readabilityHandler and
// then setting the handler to nil, as the tests' runProgram did.
final class Collector: @unchecked Sendable {
    let lock = NSLock(); var data = Data()
    func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
}
func run() async throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/echo")
    process.arguments = ["PONG"]
    let output = Pipe(), error = Pipe()
    process.standardOutput = output
    process.standardError = error
    let collected = Collector()
    output.fileHandleForReading.readabilityHandler = { handle in collected.append(handle.availableData) }
    error.fileHandleForReading.readabilityHandler = { handle in collected.append(handle.availableData) }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        process.terminationHandler = { _ in continuation.resume() }
        try! process.run()
    }
    output.fileHandleForReading.readabilityHandler = nil
    error.fileHandleForReading.readabilityHandler = nil
    collected.append(output.fileHandleForReading.readDataToEndOfFile())
    return process.terminationStatus
}
@main struct Main {
    static func main() async throws {
        for i in 0..<300 { _ = try await run(); if i % 100 == 0 { print(i) } }
        print("ok")
    }
}
