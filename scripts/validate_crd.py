#!/usr/bin/env python3
"""Validates custom resources (KEDA's ScaledObject, TriggerAuthentication) against the
openAPIV3Schema of their CustomResourceDefinition, as the API server would on `kubectl apply`.

    validate_crd.py --crd CRD.yaml [--crd ...] MANIFEST.yaml [...]

Every document of every manifest must be a kind one of the CRDs defines; a document no CRD
defines is an error, so that a file cannot go unchecked. Exit status 0 when all are valid, 1
otherwise, with one line per problem on stderr.

Run by scripts/validate-deploy.sh inside its virtualenv (pyyaml, jsonschema).
"""

import argparse
import copy
import re
import sys

import jsonschema
import yaml

# The trigger metadata keys KEDA's scalers read, by trigger type. A trigger's `metadata` is a
# map of strings in the CRD (any key passes the schema) and KEDA ignores keys it does not know,
# so a misspelled `lagcount` would silently fall back to scaling on pending entries. From
# KEDA v2.20.2 pkg/scalers/redis_streams_scaler.go (redisStreamsMetadata) and redis_scaler.go
# (redisConnectionInfo); a key read with `order=...resolvedEnv` may also be given as
# `<key>FromEnv`, naming an environment variable of the scale target's container.
TRIGGER_METADATA = {
    "redis-streams": {
        "plain": {
            "pendingEntriesCount", "streamLength", "lagCount", "stream", "consumerGroup",
            "databaseIndex", "activationLagCount", "enableTLS", "unsafeSsl",
            "address", "host", "port", "username", "password",
            "sentinelUsername", "sentinelPassword", "sentinelMaster",
        },
        "fromEnv": {
            "address", "host", "port", "username", "password",
            "sentinelUsername", "sentinelPassword", "sentinelMaster",
        },
        "required": [("stream",), ("address", "addressFromEnv", "host", "hostFromEnv")],
    },
}

# What the API server accepts in metadata for any object (ObjectMeta's writable fields).
OBJECT_META = {
    "name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences",
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def closed(schema):
    """The schema with unknown fields rejected wherever it lists `properties`.

    A CRD's schema is structural: the API server prunes (drops without a word) any field the
    schema does not name, unless `x-kubernetes-preserve-unknown-fields` says to keep them. A
    misspelled field therefore never reaches KEDA. JSON Schema's default is the opposite
    (unknown fields allowed), so: `additionalProperties` absent where `properties` is given
    means false here.
    """
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def load_crds(paths):
    """(apiVersion, kind) -> closed openAPIV3Schema, for every served version of every CRD."""
    schemas = {}
    for path in paths:
        with open(path) as file:
            crd = yaml.safe_load(file)
        if crd.get("kind") != "CustomResourceDefinition":
            raise SystemExit(f"{path}: not a CustomResourceDefinition")
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schemas[(f"{group}/{version['name']}", kind)] = closed(version["schema"]["openAPIV3Schema"])
    return schemas


def metadata_problems(document):
    problems = []
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        return ["metadata: missing or not a mapping"]
    for key in sorted(set(metadata) - OBJECT_META):
        problems.append(f"metadata: unknown field {key!r}")
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS subdomain name")
    for field in ("labels", "annotations"):
        values = metadata.get(field, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            problems.append(f"metadata.{field}: values must be strings")
    return problems


def trigger_problems(document):
    problems = []
    triggers = (document.get("spec") or {}).get("triggers") or []
    for index, trigger in enumerate(triggers):
        if not isinstance(trigger, dict):
            continue
        known = TRIGGER_METADATA.get(trigger.get("type"))
        metadata = trigger.get("metadata")
        if known is None or not isinstance(metadata, dict):
            continue
        allowed = known["plain"] | {f"{key}FromEnv" for key in known["fromEnv"]}
        for key in sorted(set(metadata) - allowed):
            problems.append(
                f"spec.triggers[{index}].metadata: {trigger['type']} has no field {key!r} "
                f"(it reads: {', '.join(sorted(allowed))})")
        for alternatives in known["required"]:
            if not any(key in metadata for key in alternatives):
                problems.append(f"spec.triggers[{index}].metadata: needs one of {', '.join(alternatives)}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crd", action="append", required=True, help="a CustomResourceDefinition YAML file")
    parser.add_argument("manifests", nargs="+")
    arguments = parser.parse_args()
    schemas = load_crds(arguments.crd)

    failed = False
    for path in arguments.manifests:
        with open(path) as file:
            documents = [d for d in yaml.safe_load_all(file) if d is not None]
        for document in documents:
            where = f"{path}: {document.get('kind')}/{(document.get('metadata') or {}).get('name')}"
            schema = schemas.get((document.get("apiVersion"), document.get("kind")))
            if schema is None:
                print(f"ERROR {where}: no CRD given for apiVersion {document.get('apiVersion')} "
                      f"kind {document.get('kind')}", file=sys.stderr)
                failed = True
                continue
            problems = []
            validator = jsonschema.Draft7Validator(schema)
            for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path)):
                location = ".".join(str(part) for part in error.path) or "(document)"
                problems.append(f"{location}: {error.message}")
            problems += metadata_problems(document)
            problems += trigger_problems(document)
            for problem in problems:
                print(f"ERROR {where}: {problem}", file=sys.stderr)
            if problems:
                failed = True
            else:
                print(f"ok {where} against its CRD")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
