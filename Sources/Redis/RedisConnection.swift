internal import CHiredis
import Glibc

/// One hiredis connection. Owns its `redisContext` and frees it in `deinit`.
///
/// Not thread safe: a ``RedisClient`` creates it and uses it from its own I/O thread only.
/// All hiredis pointer code of llmq lives in this file.
final class RedisConnection {
    private let context: UnsafeMutablePointer<redisContext>

    /// Connects and authenticates; the calls block, so this runs on the client's I/O thread.
    init(configuration: RedisConfiguration, clientName: String?) throws(RedisError) {
        guard let context = redisConnectWithTimeout(
            configuration.host, Int32(configuration.port), timeval(configuration.connectTimeout))
        else {
            throw RedisError(.connection, "could not allocate a Redis context")
        }
        self.context = context
        if llmq_redis_context_error(context) != 0 {
            let reason = String(cString: llmq_redis_context_errstr(context))
            // deinit frees the context.
            throw RedisError(.connection, "\(configuration.host):\(configuration.port): \(reason)")
        }
        redisSetTimeout(context, timeval(configuration.commandTimeout))
        var setup: [RedisCommand] = []
        if let password = configuration.password {
            if let username = configuration.username {
                setup.append(RedisCommand("AUTH", username, password))
            } else {
                setup.append(RedisCommand("AUTH", password))
            }
        }
        if configuration.database != 0 {
            setup.append(RedisCommand("SELECT", String(configuration.database)))
        }
        if let clientName {
            setup.append(RedisCommand("CLIENT", "SETNAME", clientName))
        }
        for command in setup {
            try append(command)
        }
        for command in setup {
            if case .error(let message) = try readReply() {
                // Never echo AUTH's arguments: they hold the password.
                let code: RedisError.Code = RedisError.isRefusal(message) ? .authentication : .connection
                throw RedisError(code, "\(command.description) failed: \(message)")
            }
        }
    }

    deinit {
        redisFree(context)
    }

    /// The socket, so that another thread can shut it down to interrupt a blocking read.
    var fileDescriptor: Int32 { context.pointee.fd }

    /// Formats the command into hiredis's output buffer; nothing is sent until a reply is read.
    func append(_ command: RedisCommand) throws(RedisError) {
        let status: Int32 = command.storage.withUnsafeBufferPointer { storage in
            command.lengths.withUnsafeBufferPointer { lengths in
                // hiredis copies the arguments while formatting, so these pointers only need
                // to live for the call. An all-empty command has no storage: point at a dummy.
                let base = storage.baseAddress.map { UnsafeRawPointer($0) } ?? UnsafeRawPointer(bitPattern: 1)!
                var offset = 0
                var pointers = [UnsafePointer<CChar>?]()
                pointers.reserveCapacity(lengths.count)
                for length in lengths {
                    pointers.append((base + offset).assumingMemoryBound(to: CChar.self))
                    offset += length
                }
                return pointers.withUnsafeMutableBufferPointer { argv in
                    redisAppendCommandArgv(context, Int32(lengths.count), argv.baseAddress, lengths.baseAddress)
                }
            }
        }
        guard status == REDIS_OK else { throw connectionError() }
    }

    /// Sends what is buffered and blocks until the next reply has arrived.
    func readReply() throws(RedisError) -> RESPValue {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
            throw connectionError()
        }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return Self.copy(reply)
    }

    private func connectionError() -> RedisError {
        let code = llmq_redis_context_error(context)
        let reason = String(cString: llmq_redis_context_errstr(context))
        if code == REDIS_ERR_EOF { return RedisError(.connection, "server closed the connection") }
        return RedisError(.connection, reason.isEmpty ? "I/O error \(code)" : reason)
    }

    private static func copy(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let value = reply.pointee
        switch value.type {
        case REDIS_REPLY_STRING:
            return .bulkString(Array(UnsafeRawBufferPointer(start: value.str, count: value.len)))
        case REDIS_REPLY_ARRAY:
            var elements: [RESPValue] = []
            elements.reserveCapacity(value.elements)
            for index in 0..<value.elements {
                if let element = value.element[index] {
                    elements.append(copy(element))
                } else {
                    elements.append(.null)
                }
            }
            return .array(elements)
        case REDIS_REPLY_INTEGER:
            return .integer(Int(value.integer))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: UnsafeRawBufferPointer(start: value.str, count: value.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: value.str, count: value.len), as: UTF8.self))
        default:
            return .null
        }
    }
}

/// Shuts down a socket so that a thread blocked on it returns at once.
func shutdownSocket(_ fileDescriptor: Int32) {
    _ = Glibc.shutdown(fileDescriptor, Int32(SHUT_RDWR))
}

private func timeval(_ duration: Duration) -> Glibc.timeval {
    let (seconds, attoseconds) = duration.components
    return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
}
