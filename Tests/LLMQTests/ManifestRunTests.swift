import Foundation
import Glibc
import LLMQRedis
import LLMQTestSupport
import Testing

/// Every YAML document of a file, as JSON values (Debian's python3-yaml, as the compose tests use).
private func yamlDocuments(_ path: String) async throws -> [[String: Any]] {
    let file = packageRoot.appendingPathComponent(path).path
    let parsed = try await runProgram(
        "/usr/bin/python3", ["-c", "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)", file])
    guard parsed.status == 0, let documents = try JSONSerialization.jsonObject(with: Data(parsed.output.utf8)) as? [[String: Any]] else {
        throw TestFailure("could not parse \(path) as YAML: \(parsed.error)")
    }
    return documents
}

private func document(_ documents: [[String: Any]], kind: String, name: String) throws -> [String: Any] {
    guard let found = documents.first(where: { $0["kind"] as? String == kind && ($0["metadata"] as? [String: Any])?["name"] as? String == name }) else {
        throw TestFailure("no \(kind) \(name)")
    }
    return found
}

private func value(_ object: Any?, _ path: String) -> Any? {
    path.split(separator: ".").reduce(object) { current, key in
        if let index = Int(key), let array = current as? [Any] { return index < array.count ? array[index] : nil }
        return (current as? [String: Any])?[String(key)]
    }
}

/// The deployment files run as they say: the worker's Kubernetes Deployment with its ConfigMap,
/// and the image's Dockerfile, started as local processes (no cluster, no Docker engine here),
/// each probed with its own probes or healthcheck.
@Suite("Manifests run: the Kubernetes worker and the image's healthcheck as local processes", .serialized, .withRedis, .withSimulator)
struct ManifestRunTests {
    @Test("The Deployment's container, with the ConfigMap's worker.json and its env, answers requests, passes its own liveness and readiness probes, and stops within its grace period")
    func kubernetesWorker() async throws {
        let deployment = try document(try await yamlDocuments("deploy/k8s/worker-deployment.yaml"), kind: "Deployment", name: "llmq-worker")
        let configMap = try document(try await yamlDocuments("deploy/k8s/worker-configmap.yaml"), kind: "ConfigMap", name: "llmq-worker")
        let llamaService = try document(try await yamlDocuments("deploy/k8s/examples/llama-server.yaml"), kind: "Service", name: "llama-server")
        let pod = try #require(value(deployment, "spec.template.spec") as? [String: Any])
        let container = try #require((pod["containers"] as? [[String: Any]])?.first { $0["name"] as? String == "worker" })

        // The config file: the ConfigMap's key at the mount path LLMQ_CONFIG names.
        var environment: [String: String] = [:]
        for variable in container["env"] as? [[String: Any]] ?? [] {
            guard let name = variable["name"] as? String else { continue }
            if let text = variable["value"] as? String { environment[name] = text; continue }
            let secret = try #require(value(variable, "valueFrom.secretKeyRef") as? [String: Any], "\(name) has neither value nor secretKeyRef")
            // Secrets: the ones the Deployment requires must be provided; optional ones may be absent.
            if secret["optional"] as? Bool == true { continue }
            environment[name] = "secret:\(secret["key"] as? String ?? "?")"
        }
        let mounts = container["volumeMounts"] as? [[String: Any]] ?? []
        let configPath = try #require(environment["LLMQ_CONFIG"])
        let mount = try #require(mounts.first { $0["mountPath"] as? String == configPath }, "nothing is mounted at \(configPath)")
        let volume = try #require((pod["volumes"] as? [[String: Any]])?.first { $0["name"] as? String == mount["name"] as? String })
        #expect(value(volume, "configMap.name") as? String == "llmq-worker")
        let configText = try #require((configMap["data"] as? [String: Any])?[mount["subPath"] as? String ?? ""] as? String)
        var config = try #require(try JSONSerialization.jsonObject(with: Data(configText.utf8)) as? [String: Any])

        // Stand-ins: Redis, and the simulator for the llama-server Service the config names.
        let (redis, client) = try RedisFixture.current
        let sim = try SimulatorFixture.current
        let endpoint = try #require(URLComponents(string: value(config, "backend.endpoint") as? String ?? ""))
        #expect(endpoint.host == "llama-server" && endpoint.port == value(llamaService, "spec.ports.0.port") as? Int, "\(endpoint)")
        var backend = config["backend"] as? [String: Any] ?? [:]
        backend["endpoint"] = sim.url
        config["backend"] = backend
        let configFile = FileManager.default.temporaryDirectory.appendingPathComponent("worker-\(UUID().uuidString).json")
        try JSONSerialization.data(withJSONObject: config).write(to: configFile)
        defer { try? FileManager.default.removeItem(at: configFile) }
        #expect(environment["LLMQ_REDIS_URL"] == "secret:redis-url")
        environment["LLMQ_REDIS_URL"] = redis.url
        environment["LLMQ_CONFIG"] = configFile.path

        // The probes' port, by name, is the one the worker listens on; here a free loopback port.
        let ports = container["ports"] as? [[String: Any]] ?? []
        let liveness = try #require(value(container, "livenessProbe.httpGet") as? [String: Any])
        let readiness = try #require(value(container, "readinessProbe.httpGet") as? [String: Any])
        for probe in [liveness, readiness] {
            let port = ports.first { $0["name"] as? String == probe["port"] as? String }?["containerPort"] as? Int
            #expect(port.map(String.init) == environment["LLMQ_METRICS_PORT"], "probe port \(String(describing: probe["port"]))")
        }
        let annotations = value(deployment, "spec.template.metadata.annotations") as? [String: String] ?? [:]
        #expect(annotations["prometheus.io/port"] == environment["LLMQ_METRICS_PORT"])
        #expect(environment["LLMQ_METRICS_HOST"] == "0.0.0.0", "a pod must listen beyond loopback for the kubelet")
        let metricsPort = try freePort()
        environment["LLMQ_METRICS_PORT"] = String(metricsPort)
        environment["LLMQ_METRICS_HOST"] = "127.0.0.1"

        let grace = try #require(pod["terminationGracePeriodSeconds"] as? Int)
        let shutdownGrace = config["shutdownGraceSeconds"] as? Int ?? 30
        #expect(grace > shutdownGrace, "terminationGracePeriodSeconds \(grace) must exceed shutdownGraceSeconds \(shutdownGrace)")

        let worker = try WorkerProcess.start(name: "k8s-worker", environment: environment)
        let base = "http://127.0.0.1:\(metricsPort)"
        _ = try await waitForHTTP(base + (readiness["path"] as? String ?? "?"), status: 200)
        #expect(try await httpGet(base + (liveness["path"] as? String ?? "?")).status == 200)
        try await publish(client, [("prompt", "hello from kubernetes"), ("max_tokens", "8")])
        let replies = try await waitForReplies(client, count: 1, workers: [worker])
        #expect(replies.first?["status"] == "ok", "\(replies)")
        let scrape = try await Scrape.take(port: metricsPort)
        #expect(scrape.value("llmq_replies_total", ["status": "ok"]) == 1)
        // JSON logs, as the Deployment asks.
        #expect(worker.output.split(separator: "\n").allSatisfy { $0.hasPrefix("{\"timestamp\":") }, "\(worker.output.prefix(500))")

        worker.signal(SIGTERM)
        let stopped = ContinuousClock.now
        #expect(await worker.waitForExit(timeout: .seconds(grace)) == 0)
        #expect(ContinuousClock.now - stopped < .seconds(grace))
    }

    @Test("The image's ENV and HEALTHCHECK: a worker with that environment passes the healthcheck command")
    func dockerfileHealthcheck() async throws {
        let dockerfile = try String(contentsOf: packageRoot.appendingPathComponent("deploy/Dockerfile"), encoding: .utf8)
        // The run stage is the last FROM.
        let runStage = try #require(dockerfile.components(separatedBy: "\nFROM ").last)
        var environment: [String: String] = [:]
        for line in runStage.split(separator: "\n") where line.hasPrefix("ENV ") {
            for pair in line.dropFirst(4).split(separator: " ") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2 { environment[String(parts[0])] = String(parts[1]) }
            }
        }
        let healthcheck = try #require(runStage.split(separator: "\n").first { $0.hasPrefix("HEALTHCHECK ") })
        let command = try #require(healthcheck.range(of: "CMD ").map { String(healthcheck[$0.upperBound...]) })
        let arguments = try #require(try JSONSerialization.jsonObject(with: Data(command.utf8)) as? [String])
        #expect(arguments.first == "llmq", "the healthcheck runs llmq itself (the image has no curl): \(arguments)")
        #expect(environment["LLMQ_METRICS_HOST"] == "0.0.0.0")
        let containerPort = try #require(environment["LLMQ_METRICS_PORT"])
        #expect(runStage.contains("EXPOSE \(containerPort)"))

        let redis = try RedisFixture.current.server
        let sim = try SimulatorFixture.current
        environment["LLMQ_METRICS_PORT"] = String(try freePort())
        environment["LLMQ_METRICS_HOST"] = "127.0.0.1"
        environment["LLMQ_REDIS_URL"] = redis.url
        environment["LLMQ_BACKEND_ENDPOINT"] = sim.url
        let worker = try WorkerProcess.start(name: "image-worker", environment: environment)
        var childEnvironment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LLMQ_") }
        childEnvironment.merge(environment) { $1 }
        let deadline = ContinuousClock.now + .seconds(20)
        var result = try await runProgram(try llmqExecutable().path, Array(arguments.dropFirst()), environment: childEnvironment)
        while result.status != 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            result = try await runProgram(try llmqExecutable().path, Array(arguments.dropFirst()), environment: childEnvironment)
        }
        #expect(result.status == 0, "\(result.output) \(result.error)")
        // And it fails when the worker is gone, as Docker must see.
        worker.signal(SIGKILL)
        _ = await worker.waitForExit()
        #expect(try await runProgram(try llmqExecutable().path, Array(arguments.dropFirst()), environment: childEnvironment).status != 0)
    }
}
