import Foundation
import Glibc
import LLMQTestSupport
import Synchronization

/// A fault-injecting proxy in front of a redis-server on loopback, in the manner of Toxiproxy
/// but aware of RESP: it sees each command, so a test can fail exactly "the second XACK" or
/// "the EVALSHA of the claim script", which a byte-level proxy cannot aim at.
///
/// Clients (llmq workers, over hiredis) connect to ``port``; each client connection gets a
/// connection of its own to the server, and a thread of its own that reads one command, decides
/// what to do with it from the ``Rule``s, forwards it, reads exactly one reply and relays it.
/// One command at a time per connection keeps the bookkeeping trivial (every reply belongs to
/// the command just sent) and still serves pipelines correctly, in order, if not fast. A
/// blocking command (`XREADGROUP ... BLOCK 2000`) simply holds its connection's thread.
///
/// Sockets block, each on a `Thread` of its own, never on Swift's cooperative pool (two threads
/// here: one stuck `recv` there would stall every test).
///
/// ```swift
/// // @Test("...", .withRedis, .withFaultProxy)
/// let proxy = try FaultProxyFixture.current
/// let lostAck = proxy.add(.init("lose the 2nd XACK's reply", matching: .command("XACK"), nth: 2, action: .dropAfter))
/// configuration.redis = proxy.configuration
/// // ... run a worker ...
/// #expect(proxy.fired(lostAck) == 1)
/// ```
///
/// It runs until ``stop()``: the threads hold it, so dropping the last reference does not end
/// it. Not supported: Pub/Sub and MONITOR (the server then sends without being asked), RESP3
/// streamed strings (`$?`, which redis-server never sends), and quoting in inline commands
/// (hiredis and redis-cli send RESP arrays).
final class FaultProxy: Sendable {
    /// What the proxy does with a command a rule fires on.
    enum Action: Sendable, Hashable {
        /// Closes the client's connection without forwarding the command: the server never ran it.
        case dropBefore
        /// Forwards the command, lets the server run it and reads its reply, then closes the
        /// client's connection without delivering the reply: it ran, but the client cannot know.
        case dropAfter
        /// Waits this long, then forwards the command normally.
        case delay(Duration)
        /// Answers `-<message>\r\n` without forwarding, e.g.
        /// `"OOM command not allowed when used memory > 'maxmemory'."`. CR and LF become spaces.
        case error(String)
    }

    /// Which commands a rule counts: a test on the arguments, the command's name (uppercased)
    /// first, values decoded as UTF-8 with invalid bytes replaced.
    ///
    /// A type around ``Rule/matches`` so that the common tests read `.command("XACK")`.
    struct Match: Sendable {
        let test: @Sendable ([String]) -> Bool

        init(_ test: @escaping @Sendable (_ arguments: [String]) -> Bool) {
            self.test = test
        }

        /// Every command.
        static var any: Match { Match { _ in true } }

        /// Every `name` command, whatever its arguments (`name` in any case).
        static func command(_ name: String) -> Match {
            let name = name.uppercased()
            return Match { $0.first == name }
        }

        /// `name` commands with an argument (after the name) that contains `text`, e.g. the
        /// SHA1 of a script for `EVALSHA`, or a key.
        static func command(_ name: String, argContains text: String) -> Match {
            let name = name.uppercased()
            return Match { $0.first == name && $0.dropFirst().contains { $0.contains(text) } }
        }

        /// `name` commands whose argument at `index` (1 is the first after the name) satisfies
        /// `predicate`; commands with fewer arguments do not match.
        static func command(_ name: String, argument index: Int, where predicate: @escaping @Sendable (String) -> Bool) -> Match {
            let name = name.uppercased()
            return Match { $0.first == name && index < $0.count && index >= 1 && predicate($0[index]) }
        }

        /// `name` commands whose argument at `index` (1 is the first after the name) is `value`.
        static func command(_ name: String, argument index: Int, equals value: String) -> Match {
            command(name, argument: index, where: { $0 == value })
        }
    }

    /// Fires `action` on the `nth` (1-based) command that `matches`, counted from when the rule
    /// was added, across every connection, and on the `times - 1` matching commands after it;
    /// then it is spent.
    ///
    /// Every rule counts every command it matches; when several would fire on one command, the
    /// first added decides, and the others' firings are used up without effect. Counting is
    /// proxy-wide, not per connection, because a dropped client reconnects and the test means
    /// "the nth XACK the worker sends", not "the nth on this socket".
    struct Rule: Sendable {
        /// For messages; need not be unique.
        var name: String
        /// Gets the command's name (uppercased) and arguments.
        var matches: @Sendable (_ arguments: [String]) -> Bool
        var nth: Int
        var times: Int
        var action: Action

        init(name: String = "", matches: @escaping @Sendable (_ arguments: [String]) -> Bool, nth: Int = 1, times: Int = 1, action: Action) {
            self.name = name
            self.matches = matches
            self.nth = nth
            self.times = times
            self.action = action
        }

        /// The same with a ``Match``, so that rules read `.init("lose an ack", matching: .command("XACK"), action: .dropAfter)`.
        init(_ name: String = "", matching match: Match, nth: Int = 1, times: Int = 1, action: Action) {
            self.init(name: name, matches: match.test, nth: nth, times: times, action: action)
        }
    }

    /// Names a rule added with ``add(_:)``.
    struct RuleID: Sendable, Hashable {
        fileprivate let value: Int
    }

    /// The loopback port clients connect to.
    let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let state = Mutex(State())
    /// Mirrors `state.stopped` for the delay loop, which polls it.
    private let stopping = Atomic<Bool>(false)

    /// The most recent commands ``commandsSeen()`` keeps.
    static let commandLogLimit = 10_000
    /// Arguments longer than this many bytes are shortened in ``commandsSeen()`` (rules see them whole):
    /// ten thousand 1 MB values would otherwise be kept.
    static let loggedArgumentLimit = 1024

    private struct State {
        var stopped = false
        var listenerOpen = true
        var nextID = 0
        var rules: [ActiveRule] = []
        /// By rule ID; kept after a rule is removed so that ``fired(_:)`` still answers.
        var fired: [Int: Int] = [:]
        var seen: [[String]] = []
        /// The sockets of each live connection, so that ``stop()`` can shut them down. A
        /// connection's thread removes its entry before it closes them, and ``stop()`` shuts
        /// down under the same lock, so it never touches a descriptor number reused since.
        var connections: [Int: Sockets] = [:]
        var accepted = 0
    }

    private struct ActiveRule {
        let id: Int
        let rule: Rule
        var matched = 0
    }

    private struct Sockets {
        var client: Int32
        var upstream: Int32 = -1
    }

    private init(port: Int, listener: Int32, upstreamPort: Int) {
        self.port = port
        self.listener = listener
        self.upstreamPort = upstreamPort
    }

    /// Listens on a free 127.0.0.1 port (bound to port 0: no race with other tests) and
    /// forwards every connection to `127.0.0.1:upstreamPort`. The server need not be up yet: a
    /// client that connects while it is down is disconnected at once, as if refused.
    static func start(upstreamPort: Int) throws -> FaultProxy {
        let (listener, port) = try boundLoopbackSocket()
        // Tests spawn redis-servers and workers; an inherited listener would outlive stop().
        _ = fcntl(listener, F_SETFD, FD_CLOEXEC)
        guard listen(listener, 128) == 0 else {
            close(listener)
            throw TestFailure("FaultProxy: listen() failed: errno \(errno)")
        }
        let proxy = FaultProxy(port: port, listener: listener, upstreamPort: upstreamPort)
        let thread = Thread { [proxy] in proxy.acceptLoop() }
        thread.name = "fault-proxy-accept"
        thread.stackSize = 256 << 10
        thread.start()
        return proxy
    }

    // MARK: Rules and what was seen

    @discardableResult
    func add(_ rule: Rule) -> RuleID {
        precondition(rule.nth >= 1 && rule.times >= 0, "FaultProxy.Rule: nth is 1-based, times not negative")
        return state.withLock { state in
            state.nextID += 1
            state.rules.append(ActiveRule(id: state.nextID, rule: rule))
            state.fired[state.nextID] = 0
            return RuleID(value: state.nextID)
        }
    }

    /// How many times the rule has fired so far.
    func fired(_ rule: RuleID) -> Int {
        state.withLock { $0.fired[rule.value] ?? 0 }
    }

    func remove(_ rule: RuleID) {
        state.withLock { $0.rules.removeAll { $0.id == rule.value } }
    }

    /// Removes every rule: from now on every command passes through.
    func clearRules() {
        state.withLock { $0.rules.removeAll() }
    }

    /// The last ``commandLogLimit`` commands received, oldest first, each as its name
    /// (uppercased) and arguments, whatever was done with them; long arguments are shortened.
    func commandsSeen() -> [[String]] {
        state.withLock { Array($0.seen.suffix(Self.commandLogLimit)) }
    }

    /// Client connections accepted so far: one more each time a client reconnects.
    var connectionsAccepted: Int { state.withLock { $0.accepted } }

    /// Client connections open now (their threads still running).
    var openConnections: Int { state.withLock { $0.connections.count } }

    /// Stops accepting and shuts down every connection's sockets, which ends every thread within
    /// moments (a delay checks every 10 ms); waits for none of them. Idempotent.
    func stop() {
        stopping.store(true, ordering: .relaxed)
        state.withLock { state in
            guard !state.stopped else { return }
            state.stopped = true
            // Wakes the accept() of the accept thread, which then closes the listener.
            if state.listenerOpen { shutdown(listener, Int32(SHUT_RDWR)) }
            for sockets in state.connections.values {
                shutdown(sockets.client, Int32(SHUT_RDWR))
                if sockets.upstream >= 0 { shutdown(sockets.upstream, Int32(SHUT_RDWR)) }
            }
        }
    }

    /// Records the command and returns what to do with it: nil to pass it through.
    private func decide(_ arguments: [String], raw: [[UInt8]]) -> Action? {
        // Predicates run outside the lock: they are the test's code, and could be slow or ask
        // the proxy something.
        let rules = state.withLock { $0.rules.map { (id: $0.id, matches: $0.rule.matches) } }
        let matching = Set(rules.filter { $0.matches(arguments) }.map(\.id))
        let logged = zip(arguments, raw).map { argument, bytes in
            bytes.count <= Self.loggedArgumentLimit
                ? argument : String(decoding: bytes.prefix(Self.loggedArgumentLimit), as: UTF8.self) + "…(\(bytes.count) bytes)"
        }
        return state.withLock { state in
            state.seen.append(logged)
            if state.seen.count >= 2 * Self.commandLogLimit { state.seen.removeFirst(state.seen.count - Self.commandLogLimit) }
            var decision: Action?
            for index in state.rules.indices where matching.contains(state.rules[index].id) {
                state.rules[index].matched += 1
                let rule = state.rules[index]
                let intoWindow = rule.matched - rule.rule.nth  // 0 on the nth matching command
                if decision == nil && intoWindow >= 0 && intoWindow < rule.rule.times {
                    decision = rule.rule.action
                    state.fired[rule.id, default: 0] += 1
                }
            }
            return decision
        }
    }

    // MARK: Connections

    private func acceptLoop() {
        while true {
            // accept4(SOCK_CLOEXEC) is hidden behind _GNU_SOURCE in the Glibc module.
            let client = accept(listener, nil, nil)
            if client < 0 {
                let error = errno
                if stopping.load(ordering: .relaxed) { break }
                if error == EINTR || error == ECONNABORTED { continue }
                // Out of descriptors: wait for some to be closed rather than stop serving.
                if error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM {
                    usleep(10_000)
                    continue
                }
                break
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            let id: Int? = state.withLock { state in
                guard !state.stopped else { return nil }
                state.nextID += 1
                state.accepted += 1
                state.connections[state.nextID] = Sockets(client: client)
                return state.nextID
            }
            guard let id else {
                close(client)
                break
            }
            Self.setNoDelay(client)
            let thread = Thread { [self] in serve(id, client) }
            thread.name = "fault-proxy-\(id)"
            thread.stackSize = 512 << 10
            thread.start()
        }
        state.withLock { state in
            state.listenerOpen = false
            close(listener)
        }
    }

    private func serve(_ id: Int, _ client: Int32) {
        var upstream: Int32 = -1
        defer {
            state.withLock { _ = $0.connections.removeValue(forKey: id) }
            shutdown(client, Int32(SHUT_RDWR))
            close(client)
            if upstream >= 0 {
                shutdown(upstream, Int32(SHUT_RDWR))
                close(upstream)
            }
        }
        upstream = connectUpstream()
        guard upstream >= 0 else { return }
        let registered = state.withLock { state in
            guard !state.stopped else { return false }
            state.connections[id]?.upstream = upstream
            return true
        }
        guard registered else { return }

        var fromClient = Inbox()
        var fromServer = Inbox()
        while true {
            let arguments: [[UInt8]]
            let raw: [UInt8]
            do {
                guard let command = try nextCommand(client, &fromClient) else { return }
                (arguments, raw) = command
            } catch {
                _ = Self.sendAll(client, Array("-ERR Protocol error: \(error)\r\n".utf8))
                return
            }
            // `*0` and blank lines: redis-server ignores them and answers nothing.
            if arguments.isEmpty { continue }
            var strings = arguments.map { String(decoding: $0, as: UTF8.self) }
            strings[0] = strings[0].uppercased()
            let action = decide(strings, raw: arguments)
            switch action {
            case .dropBefore?:
                return
            case .error(let message)?:
                let line = String(message.map { $0 == "\r" || $0 == "\n" ? " " : $0 })
                guard Self.sendAll(client, Array("-\(line)\r\n".utf8)) else { return }
                continue
            case .delay(let duration)?:
                guard pause(duration) else { return }
            case .dropAfter?, nil:
                break
            }
            guard Self.sendAll(upstream, raw) else { return }
            // Relays any RESP3 push (client tracking) that comes before the reply, then the reply.
            while true {
                guard let reply = nextReply(upstream, &fromServer, client: client) else { return }
                let isPush = fromServer.bytes[reply.lowerBound] == UInt8(ascii: ">")
                if !isPush && action == .dropAfter { return }
                let sent = fromServer.bytes[reply].withUnsafeBytes { Self.sendAll(client, $0) }
                fromServer.consume(upTo: reply.upperBound)
                guard sent else { return }
                if !isPush { break }
            }
        }
    }

    /// Sleeps for `duration`, in slices so that ``stop()`` ends it; false when stopped.
    private func pause(_ duration: Duration) -> Bool {
        let deadline = ContinuousClock.now + duration
        while !stopping.load(ordering: .relaxed) {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return true }
            let slice = min(left, .milliseconds(10))
            let (seconds, attoseconds) = slice.components
            usleep(useconds_t(seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
        }
        return false
    }

    /// A new connection to the server, or -1 when it refuses.
    private func connectUpstream() -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(upstreamPort).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            return -1
        }
        Self.setNoDelay(fd)
        return fd
    }

    /// Replies are written in one piece but may wait behind Nagle's algorithm for the peer's
    /// delayed ACK (40 ms a round trip); commands here are one small write each.
    private static func setNoDelay(_ fd: Int32) {
        var on: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
    }

    // MARK: Reading and writing

    /// Bytes received and not yet consumed: `bytes[start...]`.
    private struct Inbox {
        var bytes: [UInt8] = []
        var start = 0

        mutating func consume(upTo end: Int) {
            start = end
            if start == bytes.count {
                bytes.removeAll(keepingCapacity: true)
                start = 0
            } else if start > 64 << 10 && start * 2 > bytes.count {
                // Compacting only now and then keeps a long pipeline from moving its tail per command.
                bytes.removeSubrange(0..<start)
                start = 0
            }
        }

        /// Appends what one `recv` gives; false at end of stream or on an error.
        mutating func receive(_ fd: Int32) -> Bool {
            // Through a scratch buffer and a memcpy: growing the array by 64 KiB of zeros first
            // costs an unspecialized loop per byte in debug builds, which the tests are.
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64 << 10) { scratch in
                while true {
                    let count = recv(fd, scratch.baseAddress!, scratch.count, 0)
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { return false }
                    bytes.append(contentsOf: UnsafeBufferPointer(rebasing: scratch[0..<count]))
                    return true
                }
            }
        }
    }

    private struct ProtocolError: Error, CustomStringConvertible {
        var description: String
    }

    /// The next command from the client: its arguments and its bytes as sent; nil when the
    /// client has gone.
    private func nextCommand(_ client: Int32, _ inbox: inout Inbox) throws -> (arguments: [[UInt8]], raw: [UInt8])? {
        while true {
            if let (arguments, end) = try Self.parseCommand(inbox.bytes, from: inbox.start) {
                let raw = Array(inbox.bytes[inbox.start..<end])
                inbox.consume(upTo: end)
                return (arguments, raw)
            }
            guard inbox.receive(client) else { return nil }
        }
    }

    /// Parses one command at `start`: a RESP array of bulk strings, as hiredis and redis-cli
    /// send, or an inline command (words separated by blanks, no quoting), as typed into
    /// telnet. Returns nil when more bytes are needed.
    private static func parseCommand(_ bytes: [UInt8], from start: Int) throws -> (arguments: [[UInt8]], end: Int)? {
        guard start < bytes.count else { return nil }
        guard bytes[start] == UInt8(ascii: "*") else {
            guard let newline = firstNewline(bytes, from: start) else {
                if bytes.count - start > 64 << 10 { throw ProtocolError(description: "too big inline request") }
                return nil
            }
            var line = bytes[start..<newline]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            let words = line.split { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }.map { Array($0) }
            return (words, newline + 1)
        }
        guard let header = try lineEnd(bytes, from: start) else { return nil }
        guard let count = integer(bytes, start + 1, header), count <= 1 << 20 else {
            throw ProtocolError(description: "invalid multibulk length")
        }
        var position = header + 2
        var arguments: [[UInt8]] = []
        arguments.reserveCapacity(max(count, 0))
        for _ in 0..<max(count, 0) {
            guard position < bytes.count else { return nil }
            guard bytes[position] == UInt8(ascii: "$") else {
                throw ProtocolError(description: "expected '$', got '\(Character(Unicode.Scalar(bytes[position])))'")
            }
            guard let lengthEnd = try lineEnd(bytes, from: position) else { return nil }
            guard let length = integer(bytes, position + 1, lengthEnd), length >= 0, length <= 512 << 20 else {
                throw ProtocolError(description: "invalid bulk length")
            }
            let data = lengthEnd + 2
            guard data + length + 2 <= bytes.count else { return nil }
            guard bytes[data + length] == 13 && bytes[data + length + 1] == 10 else {
                throw ProtocolError(description: "bulk string not followed by CRLF")
            }
            arguments.append(Array(bytes[data..<data + length]))
            position = data + length + 2
        }
        return (arguments, position)
    }

    /// The next complete reply from the server (a range of `inbox.bytes`, not yet consumed);
    /// nil when the server has gone, sent something that is not RESP, or the client hung up
    /// while waiting (a blocked XREADGROUP of a killed worker must not hold a thread for good).
    private func nextReply(_ upstream: Int32, _ inbox: inout Inbox, client: Int32) -> Range<Int>? {
        var scanner = ReplyScanner(position: inbox.start)
        while true {
            do {
                if let end = try scanner.scan(inbox.bytes) { return inbox.start..<end }
            } catch {
                return nil
            }
            guard Self.waitForReply(upstream, client: client), inbox.receive(upstream) else { return nil }
        }
    }

    /// POLLRDHUP (the peer shut down its sending side), which the Glibc module hides behind
    /// _GNU_SOURCE.
    private static let pollReadHangUp: Int16 = 0x2000

    /// Waits until the server has something to read; false if the client hangs up first.
    private static func waitForReply(_ upstream: Int32, client: Int32) -> Bool {
        var descriptors = [
            pollfd(fd: upstream, events: Int16(POLLIN), revents: 0),
            // Not POLLIN: the client may pipeline more commands meanwhile.
            pollfd(fd: client, events: pollReadHangUp, revents: 0),
        ]
        while true {
            let ready = poll(&descriptors, 2, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                return false
            }
            if descriptors[0].revents != 0 { return true }  // data, or an end that recv will report
            if descriptors[1].revents != 0 {
                // A client that only shut down its sending side still gets a reply that is
                // already on its way, as redis-server would give it.
                var server = pollfd(fd: upstream, events: Int16(POLLIN), revents: 0)
                return poll(&server, 1, 200) > 0
            }
        }
    }

    /// Finds where one RESP2/RESP3 reply ends, resuming where it left off when more bytes came.
    private struct ReplyScanner {
        /// Where the next element to scan begins.
        var position: Int
        /// How many elements each open aggregate still expects, innermost last.
        var open: [Int] = []

        /// The end of the reply, or nil when more bytes are needed.
        mutating func scan(_ bytes: [UInt8]) throws -> Int? {
            while true {
                guard position < bytes.count, let header = try FaultProxy.lineEnd(bytes, from: position) else { return nil }
                let body = header + 2
                var children = 0
                switch bytes[position] {
                case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "_"),
                    UInt8(ascii: "#"), UInt8(ascii: ","), UInt8(ascii: "("):
                    position = body
                case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
                    guard let length = FaultProxy.integer(bytes, position + 1, header), length >= -1 else {
                        throw ProtocolError(description: "invalid bulk length in reply")
                    }
                    if length == -1 {
                        position = body
                    } else {
                        guard body + length + 2 <= bytes.count else { return nil }
                        position = body + length + 2
                    }
                case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
                    guard let count = FaultProxy.integer(bytes, position + 1, header), count >= -1 else {
                        throw ProtocolError(description: "invalid aggregate length in reply")
                    }
                    switch bytes[position] {
                    case UInt8(ascii: "%"): children = 2 * count
                    // An attribute map comes before the element it describes, which is part of it here.
                    case UInt8(ascii: "|"): children = 2 * count + 1
                    default: children = count
                    }
                    position = body
                default:
                    throw ProtocolError(description: "unknown reply type \(bytes[position])")
                }
                if children > 0 {
                    open.append(children)
                    continue
                }
                // One element is complete; so is each aggregate it was the last element of.
                while let last = open.last {
                    if last > 1 {
                        open[open.count - 1] = last - 1
                        break
                    }
                    open.removeLast()
                }
                if open.isEmpty { return position }
            }
        }
    }

    /// The index of the `\r` of the CRLF ending the line that starts at `start`; nil if not
    /// all there yet.
    private static func lineEnd(_ bytes: [UInt8], from start: Int) throws -> Int? {
        guard let newline = firstNewline(bytes, from: start) else { return nil }
        guard newline > start, bytes[newline - 1] == 13 else { throw ProtocolError(description: "line without CR") }
        return newline - 1
    }

    private static func firstNewline(_ bytes: [UInt8], from start: Int) -> Int? {
        guard start < bytes.count else { return nil }
        return bytes.withUnsafeBytes { buffer -> Int? in
            guard let found = memchr(buffer.baseAddress! + start, 10, buffer.count - start) else { return nil }
            return buffer.baseAddress!.distance(to: UnsafeRawPointer(found))
        }
    }

    /// The decimal integer in `bytes[from..<to]`, or nil.
    private static func integer(_ bytes: [UInt8], _ from: Int, _ to: Int) -> Int? {
        var index = from
        let negative = index < to && bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        guard index < to, to - index <= 18 else { return nil }
        var value = 0
        while index < to {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            value = value * 10 + Int(digit)
            index += 1
        }
        return negative ? -value : value
    }

    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { sendAll(fd, $0) }
    }

    /// Writes everything; false once the peer is gone (MSG_NOSIGNAL: never SIGPIPE).
    private static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if sent < 0 && errno == EINTR { continue }
            if sent <= 0 { return false }
            offset += sent
        }
        return true
    }
}
