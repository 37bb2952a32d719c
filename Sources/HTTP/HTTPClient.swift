internal import CCurl
import DequeModule
import Foundation

/// An HTTP/1.1 client that runs many transfers at once on one thread, using libcurl's multi
/// interface.
///
/// Every transfer is added to one `CURLM` handle, which keeps a cache of open connections:
/// finished transfers leave their connection there and the next request to the same host reuses
/// it (keep-alive). The thread sleeps in `curl_multi_poll` and is woken by `curl_multi_wakeup`
/// when a request is submitted, so no Swift task ever blocks.
public final class HTTPClient: Sendable {
    /// Limits of the client as a whole.
    public struct Configuration: Sendable {
        /// Time allowed to establish a connection.
        public var connectTimeout: Duration
        /// Connections kept open for reuse; set it to at least the number of concurrent requests.
        public var maxCachedConnections: Int
        /// Larger responses fail with ``HTTPClientError/Code/responseTooLarge``.
        public var maxResponseBytes: Int

        public init(connectTimeout: Duration = .seconds(5), maxCachedConnections: Int = 64, maxResponseBytes: Int = 32 << 20) {
            self.connectTimeout = connectTimeout
            self.maxCachedConnections = maxCachedConnections
            self.maxResponseBytes = maxResponseBytes
        }
    }

    private enum Command {
        case start(Transfer)
        /// Holds the transfer itself, not its identifier: a freed transfer's address may be reused.
        case cancel(Transfer)
    }

    private struct State {
        var commands: Deque<Command> = []
        var isShutdown = false
    }

    public let configuration: Configuration
    private let multi: MultiHandle
    private let lock = NSLock()
    nonisolated(unsafe) private var state = State()  // guarded by `lock`

    public init(configuration: Configuration = Configuration()) {
        CurlGlobal.initialize()
        self.configuration = configuration
        self.multi = MultiHandle(maxCachedConnections: configuration.maxCachedConnections)
        // The thread holds the client until `shutdown()` ends its loop.
        let thread = Thread { [multi, self] in
            self.runLoop(multi)
        }
        thread.name = "llmq-http"
        thread.start()
    }

    /// Performs the request and returns the whole response, whatever its status.
    /// - Throws: ``HTTPClientError`` when no response arrived.
    public func execute(_ request: HTTPRequest) async throws(HTTPClientError) -> HTTPResponse {
        try await run(request) { transfer, continuation in transfer.delivery = .whole(continuation) }
    }

    /// Performs the request, handing the body to `onBody` piece by piece as it arrives; returns
    /// the response's head once the body has ended.
    ///
    /// `onBody` runs on the client's thread, so a streamed answer costs no task switch per piece;
    /// it must be quick (every transfer waits for it) and returns false to stop the transfer,
    /// which then fails.
    /// - Throws: ``HTTPClientError`` when no complete response arrived.
    public func execute(
        _ request: HTTPRequest, onBody: @escaping @Sendable (_ head: HTTPResponseHead, _ piece: UnsafeRawBufferPointer) -> Bool
    ) async throws(HTTPClientError) -> HTTPResponseHead {
        try await run(request) { transfer, continuation in transfer.delivery = .pieces(onBody, continuation) }
    }

    /// Starts a transfer on the client's thread and waits for what `deliver` arranged to hear.
    private func run<Value: Sendable>(
        _ request: HTTPRequest,
        deliver: (Transfer, CheckedContinuation<Result<Value, HTTPClientError>, Never>) -> Void
    ) async throws(HTTPClientError) -> Value {
        let transfer = Transfer(request: request, configuration: configuration)
        let result: Result<Value, HTTPClientError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                deliver(transfer, continuation)
                if !submit(.start(transfer)) {
                    transfer.finish(.failure(HTTPClientError(.shutdown, "HTTP client is shut down")))
                }
            }
        } onCancel: {
            // Runs at once for a task cancelled already. The flag stops a transfer the thread has
            // not started yet (it never starts); the command stops one that is running.
            transfer.isCancelled.withLockedValue { $0 = true }
            _ = submit(.cancel(transfer))
        }
        return try result.get()
    }

    /// Fails transfers in flight, closes every connection and stops the thread. Call it when
    /// done: the thread keeps the client alive until then, and an idle keep-alive connection
    /// holds a server thread on servers that have one per connection (llama-server).
    public func shutdown() {
        lock.lock()
        if !state.isShutdown {
            state.isShutdown = true
            multi.wakeup()
        }
        lock.unlock()
    }

    private func submit(_ command: Command) -> Bool {
        lock.lock()
        guard !state.isShutdown else {
            lock.unlock()
            return false
        }
        state.commands.append(command)
        // Under the lock: the loop closes the multi handle under it too, so a wakeup never
        // reaches a freed handle.
        multi.wakeup()
        lock.unlock()
        return true
    }

    // MARK: - The transfer thread

    private func runLoop(_ multi: MultiHandle) {
        var active: [ObjectIdentifier: Transfer] = [:]
        var idleHandles: [EasyHandle] = []
        while true {
            lock.lock()
            let commands = state.commands
            state.commands.removeAll(keepingCapacity: true)
            let isShutdown = state.isShutdown
            lock.unlock()

            if isShutdown {
                for transfer in active.values {
                    if let easy = transfer.easy { multi.remove(easy) }
                    transfer.finish(.failure(HTTPClientError(.shutdown, "HTTP client is shut down")))
                }
                for command in commands {
                    if case .start(let transfer) = command {
                        transfer.finish(.failure(HTTPClientError(.shutdown, "HTTP client is shut down")))
                    }
                }
                idleHandles.removeAll()
                lock.lock()
                multi.close()
                lock.unlock()
                return
            }

            for command in commands {
                switch command {
                case .start(let transfer):
                    if transfer.isCancelled.withLockedValue({ $0 }) {
                        transfer.finish(.failure(HTTPClientError(.cancelled, "request cancelled before it started")))
                        continue
                    }
                    let easy = idleHandles.popLast() ?? EasyHandle()
                    if let error = transfer.configure(easy) {
                        idleHandles.append(easy)
                        transfer.finish(.failure(error))
                        continue
                    }
                    multi.add(easy)
                    active[ObjectIdentifier(transfer)] = transfer
                case .cancel(let transfer):
                    guard active.removeValue(forKey: ObjectIdentifier(transfer)) != nil, let easy = transfer.easy else { continue }
                    multi.remove(easy)
                    transfer.finish(.failure(HTTPClientError(.cancelled, "request cancelled")))
                    if let reusable = transfer.releaseHandle() { idleHandles.append(reusable) }
                }
            }

            multi.perform()
            while let (easy, code) = multi.nextCompleted() {
                guard let transfer = easy.transfer, active.removeValue(forKey: ObjectIdentifier(transfer)) != nil else {
                    multi.remove(easy)
                    continue
                }
                multi.remove(easy)
                transfer.complete(code: code)
                if let reusable = transfer.releaseHandle(), idleHandles.count < configuration.maxCachedConnections {
                    idleHandles.append(reusable)
                }
            }
            // Sleeps until a socket is ready, curl's next timeout, or a wakeup from `submit`.
            multi.poll(timeoutMilliseconds: active.isEmpty ? 1000 : 100)
        }
    }
}
