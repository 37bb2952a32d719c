import Foundation
import Glibc
import LLMQTestSupport
import Synchronization

/// An HTTP server on a free loopback port that answers each request with whatever bytes a
/// script says, well-formed or not: hostile headers, broken framing, truncated or endless
/// bodies, stalls. It is the "backend that is broken on purpose" of the fuzz tests, where
/// `llmq sim` (a well-behaved HTTP server) cannot go.
///
/// One request per connection: every answer ends by closing the connection, so that a broken
/// answer cannot confuse the next one. Sockets block, each on a thread of its own, never on
/// Swift's cooperative pool.
final class ScriptedHTTPServer: Sendable {
    /// What to do with one request.
    enum Action: Sendable {
        /// Write these bytes, then close.
        case respond([UInt8])
        /// Write these bytes, then keep the connection open without a word until the client gives up
        /// (or `limit` passes).
        case stall([UInt8], limit: Duration)
        /// Write these bytes, then `chunk` again and again until the client closes (or `limit`).
        case endless(head: [UInt8], chunk: [UInt8], limit: Duration)
        /// Close without answering.
        case close
    }

    let port: Int
    private let listener: Int32
    private let script: @Sendable (_ index: Int, _ request: [UInt8]) -> Action
    private let counter = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)

    /// - Parameter script: Called once per request, with its 0-based index and its bytes
    ///   (head and body), on the connection's thread.
    init(script: @escaping @Sendable (_ index: Int, _ request: [UInt8]) -> Action) throws {
        self.script = script
        let (fd, port) = try boundLoopbackSocket()
        guard listen(fd, 512) == 0 else {
            close(fd)
            throw TestFailure("listen() failed")
        }
        listener = fd
        self.port = port
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "scripted-http-accept"
        thread.start()
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Requests answered (or being answered) so far.
    var requests: Int { counter.load(ordering: .relaxed) }

    /// Stops accepting; stalled and endless answers end within a moment.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private func acceptLoop() {
        while !stopped.load(ordering: .relaxed) {
            let connection = accept(listener, nil, nil)
            if connection < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                break
            }
            let thread = Thread { [self] in serve(connection) }
            thread.stackSize = 256 << 10
            thread.start()
        }
        close(listener)
    }

    private func serve(_ connection: Int32) {
        defer { close(connection) }
        guard let request = readRequest(connection) else { return }
        // A worker asks a llama-server for its slots (`GET /props`) at start; this server is
        // not one, and scripts number the chat requests only.
        if request.starts(with: Array("GET ".utf8)) {
            _ = write(connection, Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
            return
        }
        let index = counter.add(1, ordering: .relaxed).oldValue
        switch script(index, request) {
        case .respond(let bytes):
            _ = write(connection, bytes)
        case .stall(let bytes, let limit):
            guard write(connection, bytes) else { return }
            let deadline = ContinuousClock.now + limit
            // Returns when the client closes (recv gives 0 or an error) or at the limit.
            while ContinuousClock.now < deadline && !stopped.load(ordering: .relaxed) {
                var pollDescriptor = pollfd(fd: connection, events: Int16(POLLIN), revents: 0)
                if poll(&pollDescriptor, 1, 50) > 0 {
                    var byte: UInt8 = 0
                    if recv(connection, &byte, 1, 0) <= 0 { return }
                }
            }
        case .endless(let head, let chunk, let limit):
            guard write(connection, head) else { return }
            let deadline = ContinuousClock.now + limit
            while ContinuousClock.now < deadline && !stopped.load(ordering: .relaxed) {
                guard write(connection, chunk) else { return }
                usleep(2000)
            }
        case .close:
            return
        }
    }

    /// Reads the head and a `Content-Length` body; nil if the client went away first.
    private func readRequest(_ connection: Int32) -> [UInt8]? {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        var headEnd: Int?
        var contentLength = 0
        while true {
            if let headEnd, received.count >= headEnd + contentLength { return received }
            let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return nil }
            received.append(contentsOf: buffer[0..<count])
            if headEnd == nil, let range = findHeadEnd(received) {
                headEnd = range
                let head = String(decoding: received[0..<range], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    contentLength = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
        }
    }

    private func findHeadEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index + 4
        }
        return nil
    }

    /// Writes everything; false once the peer is gone (never SIGPIPE: MSG_NOSIGNAL).
    private func write(_ connection: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { send(connection, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return false }
            offset += sent
        }
        return true
    }
}

/// An HTTP/1.1 response as bytes, with a `Content-Length` that matches the body unless the
/// headers give one.
func httpResponse(status: Int, reason: String = "Whatever", headers: [(String, String)] = [], body: [UInt8]) -> [UInt8] {
    var head = "HTTP/1.1 \(status) \(reason)\r\n"
    var hasLength = false
    for (name, value) in headers {
        head += "\(name): \(value)\r\n"
        if name.lowercased() == "content-length" || name.lowercased() == "transfer-encoding" { hasLength = true }
    }
    if !hasLength { head += "Content-Length: \(body.count)\r\n" }
    head += "Connection: close\r\n\r\n"
    return Array(head.utf8) + body
}

/// A deterministic random number generator (SplitMix64), so a fuzz run can be repeated from
/// its seed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The fuzz seed: `LLMQ_FUZZ_SEED` if set, else `fixed`; printed so a failure can be replayed.
func fuzzSeed(_ fixed: UInt64, test: String) -> UInt64 {
    let seed = ProcessInfo.processInfo.environment["LLMQ_FUZZ_SEED"].flatMap { UInt64($0) } ?? fixed
    print("\(test): fuzz seed \(seed) (LLMQ_FUZZ_SEED=\(seed) replays it)")
    return seed
}
