import Foundation
import Hummingbird

// The simulator's own control endpoints: /sim/stats, /sim/faults.
extension SimulatorResponder {
    func simStats() -> Response {
        let stats = state.stats
        var json = JSONWriter()
        json.beginObject()
        json.field("requests", stats.requests)
        json.field("completed", stats.completed)
        json.field("inFlight", stats.inFlight)
        json.field("maxInFlight", stats.maxInFlight)
        json.field("queued", stats.queued)
        json.field("maxQueued", stats.maxQueued)
        json.field("rejected", stats.rejected)
        json.field("faults", stats.faults)
        json.field("invalid", stats.invalid)
        json.field("cancelled", stats.cancelled)
        json.field("promptTokens", stats.promptTokens)
        json.field("cachedPromptTokens", stats.cachedPromptTokens)
        json.endObject()
        return self.json(json)
    }

    func simFaults() -> Response {
        do {
            let data = try JSONEncoder().encode(state.faults)
            return json(String(decoding: data, as: UTF8.self))
        } catch {
            return json(#"{"error":"could not encode faults"}"#, status: .internalServerError)
        }
    }

    func setSimFaults(_ request: Request) async -> Response {
        var request = request
        let faults: SimulatorFaults
        do {
            let body = try await request.collectBody(upTo: 1024 * 1024)
            faults = try JSONDecoder().decode(SimulatorFaults.self, from: body.withUnsafeReadableBytes { Data($0) })
            try faults.validate()
        } catch let error as SimulatorConfigurationError {
            return simError(error.description)
        } catch {
            return simError("invalid faults body: \(error)")
        }
        state.setFaults(faults)
        logger.info("Faults replaced", metadata: ["llmq.sim.faults": "\(faults)"])
        return simFaults()
    }

    func simError(_ message: String) -> Response {
        Response(
            status: .badRequest,
            headers: [.contentType: OllamaFormat.contentType],
            body: .init(byteBuffer: OllamaFormat.error(message))
        )
    }
}
