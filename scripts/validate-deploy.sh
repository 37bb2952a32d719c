#!/usr/bin/env bash
# Validates llmq's deployment files without a cluster, a Prometheus or a Grafana:
#
#   scripts/validate-deploy.sh [ROOT]     ROOT holds deploy/ (default: this repository)
#
# - deploy/k8s/**.yaml of built-in kinds: kubernetes-validate --strict against Kubernetes
#   $K8S_VERSION's OpenAPI schemas (unknown fields and wrong types are errors);
# - KEDA's kinds (apiVersion keda.sh/*): scripts/validate_crd.py against the CRDs committed in
#   deploy/k8s/schemas (see its SOURCE.md);
# - kustomization.yaml: every resource it lists exists;
# - deploy/prometheus: promtool check rules alerts.yml, promtool check config prometheus.yml;
# - deploy/grafana/llmq.json: scripts/check_observability.py (JSON, datasource variable, every
#   llmq_* metric of the dashboard and the rules in deploy/metrics.txt), then promtool parses
#   every dashboard query.
#
# Every check runs, and each problem is printed; exit status 1 if any check failed.
# Python tools live in a virtualenv made once under ${LLMQ_CACHE:-~/.cache/llmq}/venv-deploy
# (needs PyPI the first time); promtool comes from Debian's `prometheus` package.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${1:-$HERE/..}" && pwd)"
CACHE="${LLMQ_CACHE:-$HOME/.cache/llmq}"
VENV="$CACHE/venv-deploy"
K8S_VERSION="${K8S_VERSION:-1.31.0}"
# Pinned; changing this list makes the virtualenv again.
REQUIREMENTS="kubernetes-validate==1.37.0 pyyaml==6.0.2 jsonschema==4.23.0"

say() { echo "validate-deploy.sh: $*" >&2; }

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements" 2>/dev/null)" = "$REQUIREMENTS" ]; then
        return 0
    fi
    say "making $VENV ($REQUIREMENTS)"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    # shellcheck disable=SC2086
    if ! { python3 -m venv "$VENV" >&2 && "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQUIREMENTS >&2; }; then
        rm -rf "$VENV"
        say "could not make the virtualenv $VENV with $REQUIREMENTS: python3-venv installed? PyPI reachable?"
        exit 2
    fi
    echo "$REQUIREMENTS" >"$VENV/.requirements"
}

ensure_venv
command -v promtool >/dev/null || { say "promtool not found (apt-get install prometheus)"; exit 2; }
PY="$VENV/bin/python"
DEPLOY="$ROOT/deploy"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=0
fail() { say "FAILED: $*"; failed=1; }

# Kubernetes manifests: sort the files by the API group of their documents.
mapfile -t manifests < <(find "$DEPLOY/k8s" -path "$DEPLOY/k8s/schemas" -prune -o -type f \( -name '*.yaml' -o -name '*.yml' \) -print | sort)
builtin=() custom=()
for file in "${manifests[@]}"; do
    case "$(basename "$file")" in kustomization.yaml | kustomization.yml) continue ;; esac
    if ! groups=$("$PY" -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d is not None:
        print("custom" if str(d.get("apiVersion", "")).startswith("keda.sh/") else "builtin")
' "$file" | sort -u); then
        fail "$file is not YAML"
        continue
    fi
    case "$groups" in
        builtin) builtin+=("$file") ;;
        custom) custom+=("$file") ;;
        "") fail "$file holds no document" ;;
        *) fail "$file mixes KEDA and built-in kinds: keep them in separate files" ;;
    esac
done

if [ ${#builtin[@]} -gt 0 ]; then
    # kubernetes-validate only warns about a kind it has no schema for (a CRD kind, a typo in
    # apiVersion); here that is an error, or the file would pass unchecked.
    if output=$("$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "${builtin[@]}" 2>&1); then status=0; else status=$?; fi
    echo "$output"
    [ "$status" -eq 0 ] || fail "kubernetes-validate --strict -k $K8S_VERSION"
    if grep -q "Couldn't find schema" <<<"$output"; then fail "kubernetes-validate has no schema for some kind above (a custom resource needs its CRD in deploy/k8s/schemas)"; fi
fi
if [ ${#custom[@]} -gt 0 ]; then
    crds=()
    for crd in "$DEPLOY"/k8s/schemas/*.yaml; do crds+=(--crd "$crd"); done
    "$PY" "$HERE/validate_crd.py" "${crds[@]}" "${custom[@]}" || fail "validate_crd.py"
fi
if [ -f "$DEPLOY/k8s/kustomization.yaml" ]; then
    "$PY" - "$DEPLOY/k8s/kustomization.yaml" <<'EOF' || fail "kustomization.yaml"
import os, sys, yaml
path = sys.argv[1]
resources = (yaml.safe_load(open(path)) or {}).get("resources") or []
missing = [r for r in resources if not os.path.exists(os.path.join(os.path.dirname(path), r))]
for name in missing:
    print(f"ERROR {path}: resource {name} does not exist", file=sys.stderr)
if not resources:
    print(f"ERROR {path}: lists no resources", file=sys.stderr)
sys.exit(1 if missing or not resources else 0)
EOF
fi

# Prometheus.
promtool check rules "$DEPLOY/prometheus/alerts.yml" || fail "promtool check rules alerts.yml"
if ! output=$(promtool check config "$DEPLOY/prometheus/prometheus.yml" 2>&1); then
    if grep -q "field kubernetes_sd_configs not found" <<<"$output"; then
        # Debian's promtool is built without Kubernetes service discovery: check the rest.
        say "this promtool has no kubernetes_sd_configs; checking prometheus.yml without its Kubernetes jobs"
        "$PY" - "$DEPLOY/prometheus/prometheus.yml" "$WORK/prometheus.yml" <<'EOF'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["scrape_configs"] = [job for job in config.get("scrape_configs", []) if "kubernetes_sd_configs" not in job]
yaml.safe_dump(config, open(sys.argv[2], "w"))
EOF
        cp "$DEPLOY/prometheus/alerts.yml" "$WORK/"
        promtool check config "$WORK/prometheus.yml" || fail "promtool check config prometheus.yml"
    else
        echo "$output"
        fail "promtool check config prometheus.yml"
    fi
else
    echo "$output"
fi

# Grafana, and the metric names of both.
"$PY" "$HERE/check_observability.py" "$DEPLOY/metrics.txt" "$DEPLOY/grafana/llmq.json" "$DEPLOY/prometheus/alerts.yml" "$WORK/dashboard-queries.yml" \
    || fail "check_observability.py"
if [ -f "$WORK/dashboard-queries.yml" ]; then
    promtool check rules "$WORK/dashboard-queries.yml" \
        || fail "promtool could not parse a query of deploy/grafana/llmq.json (dashboard:query_N is the Nth query)"
fi

if [ "$failed" -ne 0 ]; then
    say "deployment files have problems (above)"
    exit 1
fi
echo "validate-deploy.sh: all deployment files are valid"
