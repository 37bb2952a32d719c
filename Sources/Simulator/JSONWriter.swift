#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Hummingbird

/// Writes JSON straight into a `ByteBuffer`.
///
/// Responses are written by hand rather than with `JSONEncoder` because the zero-latency benchmark path answers
/// thousands of requests a second and the encoder's boxing dominated that cost; it also keeps the field order
/// the real servers use, which makes captured traffic easy to compare.
struct JSONWriter {
    var buffer: ByteBuffer
    private var needsComma = false

    init(capacity: Int = 512) {
        buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    mutating func beginObject() {
        begin(UInt8(ascii: "{"))
    }

    mutating func endObject() {
        end(UInt8(ascii: "}"))
    }

    mutating func beginArray() {
        begin(UInt8(ascii: "["))
    }

    mutating func endArray() {
        end(UInt8(ascii: "]"))
    }

    private mutating func begin(_ bracket: UInt8) {
        separate()
        buffer.writeInteger(bracket)
        needsComma = false
    }

    private mutating func end(_ bracket: UInt8) {
        buffer.writeInteger(bracket)
        needsComma = true
    }

    /// Writes `"name":`; the next value or container belongs to it.
    mutating func key(_ name: StaticString) {
        separate()
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeStaticString(name)
        buffer.writeStaticString("\":")
        needsComma = false
    }

    mutating func string(_ value: some StringProtocol) {
        separate()
        writeEscaped(value)
        needsComma = true
    }

    mutating func int(_ value: Int) {
        separate()
        buffer.writeString(String(value))
        needsComma = true
    }

    mutating func int64(_ value: Int64) {
        separate()
        buffer.writeString(String(value))
        needsComma = true
    }

    /// Non-finite numbers are not JSON; they are written as 0, where a real server would have divided by zero.
    mutating func double(_ value: Double) {
        separate()
        buffer.writeString(value.isFinite ? String(value) : "0")
        needsComma = true
    }

    mutating func bool(_ value: Bool) {
        separate()
        buffer.writeStaticString(value ? "true" : "false")
        needsComma = true
    }

    mutating func null() {
        separate()
        buffer.writeStaticString("null")
        needsComma = true
    }

    mutating func field(_ name: StaticString, _ value: some StringProtocol) {
        key(name)
        string(value)
    }

    mutating func field(_ name: StaticString, _ value: Int) {
        key(name)
        int(value)
    }

    mutating func field(_ name: StaticString, _ value: Double) {
        key(name)
        double(value)
    }

    mutating func field(_ name: StaticString, _ value: Bool) {
        key(name)
        bool(value)
    }

    /// Appends raw bytes between values, such as SSE framing or NDJSON newlines, and starts a fresh value.
    mutating func raw(_ text: StaticString) {
        buffer.writeStaticString(text)
        needsComma = false
    }

    private mutating func separate() {
        if needsComma {
            buffer.writeInteger(UInt8(ascii: ","))
        }
    }

    private mutating func writeEscaped(_ value: some StringProtocol) {
        buffer.writeInteger(UInt8(ascii: "\""))
        let utf8 = value.utf8
        // Most strings need no escaping; copy those in one go.
        if !utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            buffer.writeBytes(utf8)
        } else {
            for byte in utf8 {
                switch byte {
                case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
                case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
                case 0x0A: buffer.writeStaticString("\\n")
                case 0x0D: buffer.writeStaticString("\\r")
                case 0x09: buffer.writeStaticString("\\t")
                case 0..<0x20:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    buffer.writeStaticString("\\u00")
                    buffer.writeInteger(hex[Int(byte >> 4)])
                    buffer.writeInteger(hex[Int(byte & 0xF)])
                default: buffer.writeInteger(byte)
                }
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}

/// Wall-clock time with nanoseconds, read without Foundation because every Ollama line carries a timestamp.
struct WallTime: Sendable {
    var seconds: Int64
    var nanoseconds: Int

    static func now() -> WallTime {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return WallTime(seconds: Int64(spec.tv_sec), nanoseconds: Int(spec.tv_nsec))
    }

    /// RFC 3339 in UTC with Go's RFC3339Nano trimming, as Ollama writes `created_at`: "2025-01-02T03:04:05.123456789Z".
    var rfc3339: String {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = Int(seconds - days * 86_400)
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)

        var text = pad(Int(year), 4) + "-" + pad(Int(month), 2) + "-" + pad(Int(day), 2)
        text += "T" + pad(secondOfDay / 3600, 2) + ":" + pad(secondOfDay / 60 % 60, 2) + ":" + pad(secondOfDay % 60, 2)
        if nanoseconds > 0 {
            var fraction = pad(nanoseconds, 9)
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text += "." + fraction
        }
        return text + "Z"
    }

    private func pad(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}
