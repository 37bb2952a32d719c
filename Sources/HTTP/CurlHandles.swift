internal import CCurl
import Foundation
import NIOConcurrencyHelpers

// All libcurl pointer code of llmq lives in this file. Each raw handle has one owner that
// frees it; the handles are used only on the HTTP client's thread (but for curl_multi_wakeup,
// which libcurl documents as callable from any thread).

enum CurlGlobal {
    // curl_global_init is not thread safe; a lazily initialised global runs it exactly once.
    private static let initialized: Bool = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    }()

    static func initialize() {
        _ = initialized
    }
}

/// Owns a `CURLM` handle, which holds the pool of reusable connections, and the epoll set its
/// sockets are watched with.
///
/// curl's socket interface: curl says which sockets to watch for what (`CURLMOPT_SOCKETFUNCTION`)
/// and when it wants to be called without socket activity (`CURLMOPT_TIMERFUNCTION`); the
/// client's thread waits in `epoll_wait` and hands each ready socket to
/// `curl_multi_socket_action`. Unlike `curl_multi_poll`, which builds and scans a `pollfd` for
/// every connection at each wakeup, a wakeup costs the sockets that are ready: with a hundred
/// streamed answers, one token at a time, that was most of the HTTP thread's time. An eventfd in
/// the same set wakes the thread for new requests.
final class MultiHandle: @unchecked Sendable {
    // @unchecked: used from the client's thread only, except `wakeup`, which is thread safe.
    private let handle: UnsafeMutableRawPointer
    private let epoll: Int32
    private let event: Int32
    private var isClosed = false
    /// When curl wants `CURL_SOCKET_TIMEOUT`; nil: no timer.
    private var timerDeadline: ContinuousClock.Instant?

    init(maxCachedConnections: Int) {
        handle = curl_multi_init()
        epoll = llmq_epoll_create()
        event = llmq_eventfd_create()
        _ = llmq_epoll_watch(epoll, event, 1, 0)
        _ = llmq_curl_multi_setopt_long(handle, CURLMOPT_MAXCONNECTS, max(4, maxCachedConnections))
        let me = Unmanaged.passUnretained(self).toOpaque()
        _ = llmq_curl_multi_setopt_socket_function(handle, socketCallback, me)
        _ = llmq_curl_multi_setopt_timer_function(handle, timerCallback, me)
    }

    deinit {
        close()
    }

    /// Closes every cached connection and frees the handle. Only on the client's thread, after
    /// all easy handles were removed, and under the client's lock (see `wakeup`).
    func close() {
        guard !isClosed else { return }
        isClosed = true
        curl_multi_cleanup(handle)
        Glibc.close(epoll)
        Glibc.close(event)
    }

    func add(_ easy: EasyHandle) {
        curl_multi_add_handle(handle, easy.handle)
    }

    func remove(_ easy: EasyHandle) {
        curl_multi_remove_handle(handle, easy.handle)
    }

    /// Lets curl act on its timer when it is due (a transfer just added asks for it at once).
    func perform() {
        guard let deadline = timerDeadline, deadline <= .now else { return }
        timerDeadline = nil
        var running: Int32 = 0
        curl_multi_socket_action(handle, CURL_SOCKET_TIMEOUT, 0, &running)
    }

    /// The next finished transfer and its result code.
    func nextCompleted() -> (EasyHandle, CURLcode)? {
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(handle, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let easyPointer = message.pointee.easy_handle else { continue }
            var privateData: UnsafeMutableRawPointer?
            _ = llmq_curl_easy_getinfo_pointer(easyPointer, CURLINFO_PRIVATE, &privateData)
            guard let privateData else { continue }
            let easy = Unmanaged<EasyHandle>.fromOpaque(privateData).takeUnretainedValue()
            return (easy, message.pointee.data.result)
        }
        return nil
    }

    /// Waits until a socket is ready, curl's timer is due, a wakeup, or `timeoutMilliseconds`;
    /// then hands the ready sockets to curl.
    func poll(timeoutMilliseconds: Int32) {
        var wait = Int(timeoutMilliseconds)
        if let deadline = timerDeadline {
            let (seconds, attoseconds) = (deadline - .now).components
            wait = max(0, min(wait, Int(seconds) * 1000 + Int((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)))
        }
        var fds = [Int32](repeating: 0, count: 64)
        var masks = [Int32](repeating: 0, count: 64)
        let ready = llmq_epoll_wait(epoll, &fds, &masks, 64, Int32(wait))
        guard ready > 0 else { return }
        var running: Int32 = 0
        for index in 0..<Int(ready) {
            if fds[index] == event {
                llmq_eventfd_drain(event)
            } else {
                curl_multi_socket_action(handle, fds[index], masks[index], &running)
            }
        }
    }

    /// Thread safe, but callers hold the client's lock so that it never overlaps `close`.
    func wakeup() {
        guard !isClosed else { return }
        llmq_eventfd_signal(event)
    }

    /// curl's socket callback: watch `socket` for `what` (`CURL_POLL_IN`, `_OUT`, `_INOUT`), or
    /// stop watching it (`CURL_POLL_REMOVE`).
    fileprivate func watch(_ socket: curl_socket_t, _ what: Int32) {
        if what == CURL_POLL_REMOVE {
            // A socket curl already closed has left the set by itself; the error is expected then.
            llmq_epoll_unwatch(epoll, socket)
        } else {
            _ = llmq_epoll_watch(epoll, socket, what & CURL_POLL_IN != 0 ? 1 : 0, what & CURL_POLL_OUT != 0 ? 1 : 0)
        }
    }

    /// curl's timer callback: call back in `milliseconds` (0: at once), or never (-1).
    fileprivate func setTimer(_ milliseconds: Int) {
        timerDeadline = milliseconds < 0 ? nil : .now + .milliseconds(milliseconds)
    }
}

private let socketCallback: llmq_curl_socket_callback = { _, socket, what, userp, _ in
    guard let userp else { return 0 }
    Unmanaged<MultiHandle>.fromOpaque(userp).takeUnretainedValue().watch(socket, what)
    return 0
}

private let timerCallback: llmq_curl_timer_callback = { _, milliseconds, userp in
    guard let userp else { return 0 }
    Unmanaged<MultiHandle>.fromOpaque(userp).takeUnretainedValue().setTimer(milliseconds)
    return 0
}

/// How a transfer hands its response over.
enum Delivery {
    /// The whole response to one waiting task.
    case whole(CheckedContinuation<Result<HTTPResponse, HTTPClientError>, Never>)
    /// Each piece of the body to a callback on the client's thread as curl receives it, then
    /// the head to the waiting task.
    case pieces(
        @Sendable (HTTPResponseHead, UnsafeRawBufferPointer) -> Bool,
        CheckedContinuation<Result<HTTPResponseHead, HTTPClientError>, Never>)
}

/// Owns a `CURL` easy handle; reused for many transfers (`curl_easy_reset` between them).
final class EasyHandle {
    let handle: UnsafeMutableRawPointer
    /// The transfer using this handle, while one is.
    var transfer: Transfer?

    init() {
        handle = curl_easy_init()
    }

    deinit {
        curl_easy_cleanup(handle)
    }
}

/// One request on its way: the options given to curl, the response being received, and the
/// continuation of the task waiting for it.
final class Transfer: @unchecked Sendable {
    // @unchecked: created by the caller, then touched only by the client's thread; the handoff
    // goes through the client's lock. `isCancelled` is the one exception, hence atomic.
    let request: HTTPRequest
    let configuration: HTTPClient.Configuration
    /// Set by the waiting task's cancellation handler, so that a transfer whose task was
    /// cancelled before the client's thread saw it never starts.
    let isCancelled = NIOLockedValueBox<Bool>(false)
    /// Where the response goes: whole, to one waiting task, or streamed (head, then body pieces).
    var delivery: Delivery?
    private(set) var easy: EasyHandle?
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var body: [UInt8] = []
    /// Body bytes received so far (also when handed over in pieces, where `body` stays empty).
    private var received = 0
    /// The head given with the pieces, made at the first one.
    private var head: HTTPResponseHead?
    private var responseHeaders: [UInt8] = []
    private var tooLarge = false
    /// curl writes a readable reason here on failure; it must stay at one address for the
    /// whole transfer, hence a raw allocation rather than an array.
    private let errorBuffer: UnsafeMutablePointer<CChar> = {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        buffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        return buffer
    }()

    init(request: HTTPRequest, configuration: HTTPClient.Configuration) {
        self.request = request
        self.configuration = configuration
    }

    deinit {
        if let headerList { curl_slist_free_all(headerList) }
        errorBuffer.deallocate()
    }

    /// Sets the handle's options for this request. Returns an error if curl rejects one.
    func configure(_ easy: EasyHandle) -> HTTPClientError? {
        self.easy = easy
        easy.transfer = self
        let handle = easy.handle
        let me = Unmanaged.passUnretained(self).toOpaque()
        var result = llmq_curl_easy_setopt_string(handle, CURLOPT_URL, request.url)
        _ = llmq_curl_easy_setopt_pointer(handle, CURLOPT_PRIVATE, Unmanaged.passUnretained(easy).toOpaque())
        _ = llmq_curl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        _ = llmq_curl_easy_setopt_long(handle, CURLOPT_TCP_NODELAY, 1)
        _ = llmq_curl_easy_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1)
        _ = llmq_curl_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, milliseconds(request.timeout))
        _ = llmq_curl_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, milliseconds(configuration.connectTimeout))
        _ = llmq_curl_easy_setopt_long(handle, CURLOPT_PROTOCOLS, Int(CURLPROTO_HTTP | CURLPROTO_HTTPS))
        errorBuffer[0] = 0
        _ = llmq_curl_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer)
        _ = llmq_curl_easy_setopt_write_function(handle, writeCallback)
        _ = llmq_curl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, me)
        _ = llmq_curl_easy_setopt_header_function(handle, headerCallback)
        _ = llmq_curl_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, me)

        // curl would send "Expect: 100-continue" for bodies over 1 KiB and wait for the server's
        // go-ahead: one more round trip per request for nothing. An empty "Expect:" turns it off.
        var lines = ["Expect:"]
        for header in request.headers { lines.append("\(header.name): \(header.value)") }
        for line in lines { headerList = curl_slist_append(headerList, line) }
        _ = llmq_curl_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList)

        if request.method == .post {
            let body = request.body ?? []
            _ = llmq_curl_easy_setopt_long(handle, CURLOPT_POST, 1)
            _ = llmq_curl_easy_setopt_long(handle, CURLOPT_POSTFIELDSIZE, body.count)
            // COPYPOSTFIELDS: curl keeps its own copy, so the Swift array need not outlive this call.
            body.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { chars in
                    let empty: [CChar] = [0]
                    if let base = chars.baseAddress {
                        result = llmq_curl_easy_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, base)
                    } else {
                        result = llmq_curl_easy_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, empty)
                    }
                }
            }
        }
        guard result == CURLE_OK else {
            return HTTPClientError(.invalidRequest, "invalid request for \(request.url): \(String(cString: curl_easy_strerror(result)))")
        }
        return nil
    }

    fileprivate func receive(_ data: UnsafeRawBufferPointer) -> Bool {
        if received + data.count > configuration.maxResponseBytes {
            tooLarge = true
            return false
        }
        received += data.count
        guard case .pieces(let onBody, _) = delivery else {
            body.append(contentsOf: data)
            return true
        }
        if head == nil { head = HTTPResponseHead(status: responseStatus(), rawHeaders: responseHeaders) }
        return onBody(head!, data)
    }

    private func responseStatus() -> Int {
        var status = 0
        if let easy { _ = llmq_curl_easy_getinfo_long(easy.handle, CURLINFO_RESPONSE_CODE, &status) }
        return status
    }

    /// Returns false (which aborts the transfer) when the headers grow past ``maxHeaderBytes``:
    /// a server that sends header lines without end must not fill the worker's memory.
    fileprivate func receiveHeader(_ line: UnsafeRawBufferPointer) -> Bool {
        if line.starts(with: "HTTP/".utf8) {
            // A new response (after a 100 Continue or a redirect): start its headers afresh.
            responseHeaders.removeAll(keepingCapacity: true)
            return true
        }
        if responseHeaders.count + line.count > maxHeaderBytes {
            tooLarge = true
            return false
        }
        responseHeaders.append(contentsOf: line)
        return true
    }

    /// Called on the client's thread when curl reports the transfer done.
    func complete(code: CURLcode) {
        guard easy != nil else { return }
        if code == CURLE_OK {
            finish(.success(HTTPResponse(status: responseStatus(), body: body, rawHeaders: responseHeaders)))
            return
        }
        let detail = String(cString: errorBuffer)
        let reason = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let errorCode: HTTPClientError.Code
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            errorCode = .connect
        case CURLE_OPERATION_TIMEDOUT:
            errorCode = .timeout
        case CURLE_WRITE_ERROR where tooLarge:
            errorCode = .responseTooLarge
        case CURLE_URL_MALFORMAT, CURLE_UNSUPPORTED_PROTOCOL:
            errorCode = .invalidRequest
        default:
            errorCode = .transport
        }
        let message = errorCode == .responseTooLarge
            ? "response from \(request.url) is larger than \(configuration.maxResponseBytes) bytes (or its headers than \(maxHeaderBytes))"
            : "\(request.method.rawValue) \(request.url): \(reason)"
        finish(.failure(HTTPClientError(errorCode, message)))
    }

    /// Resumes the waiting task, once.
    func finish(_ result: Result<HTTPResponse, HTTPClientError>) {
        guard let delivery else { return }
        self.delivery = nil
        switch delivery {
        case .whole(let continuation):
            continuation.resume(returning: result)
        case .pieces(_, let continuation):
            continuation.resume(returning: result.map { HTTPResponseHead(status: $0.status, rawHeaders: $0.rawHeaders) })
        }
    }

    /// Detaches the easy handle, resets it and hands it back for reuse.
    func releaseHandle() -> EasyHandle? {
        guard let easy else { return nil }
        self.easy = nil
        easy.transfer = nil
        curl_easy_reset(easy.handle)
        if let headerList {
            curl_slist_free_all(headerList)
            self.headerList = nil
        }
        return easy
    }
}

private func milliseconds(_ duration: Duration) -> Int {
    let (seconds, attoseconds) = duration.components
    return max(1, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
}

private let writeCallback: llmq_curl_write_callback = { data, size, count, userdata in
    guard let data, let userdata else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    let length = size * count
    return transfer.receive(UnsafeRawBufferPointer(start: data, count: length)) ? length : 0
}

private let headerCallback: llmq_curl_write_callback = { data, size, count, userdata in
    guard let data, let userdata else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    let length = size * count
    return transfer.receiveHeader(UnsafeRawBufferPointer(start: data, count: length)) ? length : 0
}

/// The most response header bytes a transfer accepts.
let maxHeaderBytes = 64 << 10
