import Foundation
import LLMQTestSupport
import Testing

/// Runs scripts/validate-deploy.sh on `root` (a folder holding `deploy/`).
///
/// Exit status 2 means the script could not set up its tools (the virtualenv needs PyPI once;
/// promtool comes from Debian's `prometheus`): that is thrown, so the test fails saying so
/// instead of counting as a verdict on the files.
private func validateDeploy(root: URL) async throws -> (status: Int32, output: String) {
    let script = packageRoot.appendingPathComponent("scripts/validate-deploy.sh").path
    let result = try await runProgram("/bin/bash", [script, root.path])
    let output = result.output + result.error
    if result.status == 2 {
        throw TestFailure("validate-deploy.sh could not set up its tools, so nothing was validated:\n\(result.error.suffix(2000))")
    }
    return (result.status, output)
}

/// One deliberate mistake in a copy of deploy/, and what the validators must say about it.
struct DeployBreakage: Sendable, CustomTestStringConvertible {
    /// The file under deploy/.
    var file: String
    var replace: String
    var with: String
    /// Text the script's output must contain: the problem named, not just a failure.
    var expected: String
    var testDescription: String

    static let all: [DeployBreakage] = [
        DeployBreakage(
            file: "k8s/worker-deployment.yaml", replace: "revisionHistoryLimit: 3", with: "replicas: \"two\"",
            expected: "spec.replicas: 'two' is not of type 'integer'", testDescription: "Deployment with replicas: \"two\""),
        DeployBreakage(
            file: "k8s/worker-deployment.yaml", replace: "livenessProbe:", with: "livenesProbe:",
            expected: "'livenesProbe' was unexpected", testDescription: "Deployment with a misspelled livenessProbe"),
        DeployBreakage(
            file: "k8s/keda-scaledobject.yaml", replace: "authenticationRef:", with: "authenticationRefs:",
            expected: "'authenticationRefs' was unexpected", testDescription: "ScaledObject with a misspelled trigger field"),
        DeployBreakage(
            file: "k8s/keda-scaledobject.yaml", replace: "lagCount: \"8\"", with: "lagcount: \"8\"",
            expected: "redis-streams has no field 'lagcount'", testDescription: "ScaledObject with a misspelled redis-streams metadata key"),
        DeployBreakage(
            file: "k8s/keda-scaledobject.yaml", replace: "pollingInterval: 15", with: "pollingInterval: \"15\"",
            expected: "spec.pollingInterval: '15' is not of type 'integer'", testDescription: "ScaledObject with a string pollingInterval"),
        DeployBreakage(
            file: "k8s/keda-scaledobject.yaml", replace: "apiVersion: keda.sh/v1alpha1", with: "apiVersion: keda.sh/v1beta1",
            expected: "no CRD given for apiVersion keda.sh/v1beta1", testDescription: "ScaledObject of an API version no CRD defines"),
        DeployBreakage(
            file: "k8s/worker-service.yaml", replace: "apiVersion: v1\nkind: Service", with: "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor",
            expected: "has no schema for some kind", testDescription: "a custom resource without its CRD"),
        DeployBreakage(
            file: "k8s/kustomization.yaml", replace: "- worker-service.yaml", with: "- worker-services.yaml",
            expected: "resource worker-services.yaml does not exist", testDescription: "kustomization listing a missing file"),
        DeployBreakage(
            file: "prometheus/alerts.yml", replace: "llmq_dead_letters_total[10m]", with: "llmq_dead_letter_total[10m]",
            expected: "llmq_dead_letter_total is not in", testDescription: "alert rule naming a metric llmq does not export"),
        DeployBreakage(
            file: "prometheus/alerts.yml", replace: "== 1\n        for: 2m", with: "== 1)\n        for: 2m",
            expected: "FAILED: promtool check rules alerts.yml", testDescription: "alert rule that is not PromQL"),
        DeployBreakage(
            file: "grafana/llmq.json", replace: "sum by (status) (rate(llmq_replies_total[1m]))", with: "sum by (status) (rate(llmq_replies_total[1m])",
            expected: "could not parse a query of deploy/grafana/llmq.json", testDescription: "dashboard query that is not PromQL"),
        DeployBreakage(
            file: "grafana/llmq.json", replace: "llmq_backend_completion_tokens_total", with: "llmq_completion_tokens_total",
            expected: "llmq_completion_tokens_total is not in", testDescription: "dashboard naming a metric llmq does not export"),
        DeployBreakage(
            file: "grafana/llmq.json", replace: "\"schemaVersion\": 39,", with: "\"schemaVersion\": 39,,",
            expected: "not valid JSON", testDescription: "dashboard that is not JSON"),
    ]
}

/// deploy/'s Kubernetes manifests, KEDA custom resources, Prometheus rules and Grafana
/// dashboard, checked without a cluster: a manifest `kubectl apply` would refuse, a KEDA field
/// the API server would silently drop, a rule Prometheus would not load or a dashboard query on
/// a metric llmq does not export fails here.
@Suite("Deployment: Kubernetes, KEDA, Prometheus and Grafana files", .serialized)
struct DeploymentTests {
    @Test("the committed deployment files pass every validator", .timeLimit(.minutes(5)))
    func committedFilesAreValid() async throws {
        let result = try await validateDeploy(root: packageRoot)
        #expect(result.status == 0, "\(result.output.suffix(3000))")
        // Each validator ran on the files it is for, rather than finding nothing to check.
        #expect(result.output.contains("deployment/llmq-worker against version"), "kubernetes-validate did not check the Deployment")
        #expect(result.output.contains("ScaledObject/llmq-worker against its CRD"), "the ScaledObject was not checked against KEDA's CRD")
        #expect(result.output.contains("TriggerAuthentication/llmq-redis against its CRD"))
        #expect(result.output.contains("SUCCESS: 7 rules found"), "promtool did not check the alert rules")
        #expect(result.output.contains("dashboard and rules name only catalogued metrics"))
    }

    @Test("a broken copy of deploy/ fails, naming the problem", .timeLimit(.minutes(5)), arguments: DeployBreakage.all)
    func brokenCopyFails(_ breakage: DeployBreakage) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("llmq-deploy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("deploy"), to: root.appendingPathComponent("deploy"))

        let file = root.appendingPathComponent("deploy").appendingPathComponent(breakage.file)
        let original = try String(contentsOf: file, encoding: .utf8)
        // If the files change so that the text is gone, the breakage would test nothing.
        try #require(original.contains(breakage.replace), "deploy/\(breakage.file) no longer contains \(breakage.replace.debugDescription); update this case")
        try original.replacingOccurrences(of: breakage.replace, with: breakage.with).write(to: file, atomically: true, encoding: .utf8)

        let result = try await validateDeploy(root: root)
        #expect(result.status == 1, "validate-deploy.sh accepted \(breakage.testDescription):\n\(result.output.suffix(2000))")
        #expect(result.output.contains(breakage.expected), "expected \(breakage.expected.debugDescription) in:\n\(result.output.suffix(2000))")
    }
}
