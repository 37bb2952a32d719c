@testable import LLMQClient
@testable import LLMQConfiguration
@testable import LLMQContract
@testable import LLMQHTTP
@testable import LLMQWorker
import Testing

@Suite("Small formats")
struct FormattingTests {
    @Test(
        "reply numbers have fixed decimals, as %.3f would print them",
        arguments: [(0.0, 3, "0.000"), (1.5, 3, "1.500"), (0.1234, 3, "0.123"), (0.0005, 3, "0.001"), (12.999_9, 3, "13.000"),
                    (1234.5678, 2, "1234.57"), (-2.25, 2, "-2.25"), (-0.0001, 3, "0.000"), (7, 0, "7")])
    func decimals(value: Double, places: Int, text: String) {
        #expect(formatDecimal(value, places: places) == text)
    }

    @Test("response headers are found by case-insensitive name")
    func headers() {
        let response = HTTPResponse(status: 503, body: [], rawHeaders: Array("Content-Type: application/json\r\nRetry-After:  2 \r\n\r\n".utf8))
        #expect(response.header("retry-after") == "2")
        #expect(response.header("Content-Type") == "application/json")
        #expect(response.header("content-length") == nil)
    }
}
