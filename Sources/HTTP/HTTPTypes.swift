/// An HTTP request for ``HTTPClient``.
public struct HTTPRequest: Sendable {
    public enum Method: String, Sendable {
        case get = "GET"
        case post = "POST"
    }

    public var method: Method
    public var url: String
    /// Header lines as name and value; `Content-Type` and authorization belong here.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]?
    /// The whole transfer, from connecting to the last byte of the response.
    public var timeout: Duration

    public init(
        method: Method = .get,
        url: String,
        headers: [(name: String, value: String)] = [],
        body: [UInt8]? = nil,
        timeout: Duration = .seconds(60)
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

/// A complete HTTP response.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    /// The final response's header block as received; parsed only when asked, since most
    /// callers never look at headers and parsing every response costs (it showed in profiles).
    var rawHeaders: [UInt8]

    public init(status: Int, body: [UInt8], headers: [String: String] = [:]) {
        self.status = status
        self.body = body
        self.rawHeaders = Array(headers.map { "\($0.key): \($0.value)\r\n" }.joined().utf8)
    }

    init(status: Int, body: [UInt8], rawHeaders: [UInt8]) {
        self.status = status
        self.body = body
        self.rawHeaders = rawHeaders
    }

    /// The value of a header (case-insensitive name), if the response has it.
    public func header(_ name: String) -> String? {
        headerValue(name, in: rawHeaders)
    }
}

/// The status and headers of a response whose body is handed over in pieces.
public struct HTTPResponseHead: Sendable {
    public var status: Int
    var rawHeaders: [UInt8]

    public init(status: Int, headers: [String: String] = [:]) {
        self.status = status
        self.rawHeaders = Array(headers.map { "\($0.key): \($0.value)\r\n" }.joined().utf8)
    }

    init(status: Int, rawHeaders: [UInt8]) {
        self.status = status
        self.rawHeaders = rawHeaders
    }

    /// The value of a header (case-insensitive name), if the response has it.
    public func header(_ name: String) -> String? {
        headerValue(name, in: rawHeaders)
    }
}

/// A header's value from a raw header block (case-insensitive name).
private func headerValue(_ name: String, in rawHeaders: [UInt8]) -> String? {
    let wanted = Array(name.lowercased().utf8)
    for line in rawHeaders.split(separator: UInt8(ascii: "\n")) {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon - line.startIndex == wanted.count else { continue }
        let matches = zip(line[..<colon], wanted).allSatisfy { byte, expected in
            (byte >= 65 && byte <= 90 ? byte + 32 : byte) == expected
        }
        guard matches else { continue }
        let value = line[line.index(after: colon)...].drop { $0 == 32 || $0 == 9 }
        return String(decoding: value.reversed().drop { $0 == 13 || $0 == 32 || $0 == 9 }.reversed(), as: UTF8.self)
    }
    return nil
}

/// A transfer that produced no HTTP response.
public struct HTTPClientError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// The connection could not be made (refused, unreachable, DNS, connect timeout).
        case connect
        /// The transfer did not finish within the request's timeout.
        case timeout
        /// The connection broke or the peer sent something that is not HTTP.
        case transport
        /// The response was larger than the client accepts.
        case responseTooLarge
        /// The request was malformed (e.g. a bad URL).
        case invalidRequest
        /// The task waiting for the response was cancelled.
        case cancelled
        /// The client was shut down.
        case shutdown
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
