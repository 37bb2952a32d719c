#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus rules against llmq's metric catalogue.

    check_observability.py METRICS.txt DASHBOARD.json RULES.yml DASHBOARD_RULES_OUT.yml

- the dashboard is JSON with a Prometheus `datasource` variable that every panel and query
  uses, unique panel ids, and a query in every non-row panel;
- every `llmq_*` name in the dashboard's queries and in the rules' expressions is in METRICS.txt (one name
  per line; a histogram is listed by its base name, and its `_bucket`, `_sum` and `_count`
  series are accepted for names not ending in `_total`);
- writes the dashboard's queries, with Grafana's variables replaced by sample values, as
  recording rules to DASHBOARD_RULES_OUT.yml, for `promtool check rules` to parse: Grafana
  itself would only show a broken query as an empty panel.

Exit status 0 when all is well, 1 otherwise, with one line per problem on stderr.
"""

import json
import re
import sys

import yaml

METRIC = re.compile(r"\bllmq_[a-zA-Z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's variables, replaced by values of the same shape for the PromQL parser.
VARIABLES = {
    "$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
    "${datasource}": "prometheus", "$stream": "llmq:requests", "$group": "llmq",
}


def unknown_metrics(text, catalogue):
    unknown = set()
    for name in set(METRIC.findall(text)):
        if name in catalogue:
            continue
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base in catalogue and not base.endswith("_total"):
            continue
        unknown.add(name)
    return sorted(unknown)


def main():
    metrics_path, dashboard_path, rules_path, output_path = sys.argv[1:5]
    problems = []
    with open(metrics_path) as file:
        catalogue = {line.strip() for line in file if line.strip() and not line.startswith("#")}

    try:
        with open(dashboard_path) as file:
            dashboard = json.load(file)
    except json.JSONDecodeError as error:
        print(f"ERROR {dashboard_path}: not valid JSON: {error}", file=sys.stderr)
        return 1

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
        problems.append("templating: no `datasource` variable of type datasource for prometheus")
    if not isinstance(dashboard.get("schemaVersion"), int):
        problems.append("schemaVersion: missing")

    expressions = []
    ids = set()
    for panel in dashboard.get("panels", []):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids:
            problems.append(f"{where}: duplicate id")
        ids.add(panel.get("id"))
        if "gridPos" not in panel:
            problems.append(f"{where}: no gridPos")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no queries")
        for target in targets:
            expression = target.get("expr", "")
            if not expression.strip():
                problems.append(f"{where}: query {target.get('refId')} is empty")
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: query {target.get('refId')} datasource is not ${{datasource}}")
            expressions.append((where, expression))
    for variable in variables.values():
        if variable.get("type") == "query":
            expressions.append((f"variable {variable['name']}", variable.get("definition", "")))

    dashboard_text = "\n".join(expression for _, expression in expressions)
    for name in unknown_metrics(dashboard_text, catalogue):
        problems.append(f"{dashboard_path}: {name} is not in {metrics_path}")
    # The rules' expressions only: comments may speak of `llmq_queue_*`.
    with open(rules_path) as file:
        rule_groups = (yaml.safe_load(file) or {}).get("groups") or []
    rules_text = "\n".join(rule.get("expr", "") for group in rule_groups for rule in group.get("rules") or [])
    for name in unknown_metrics(rules_text, catalogue):
        problems.append(f"{rules_path}: {name} is not in {metrics_path}")

    # label_values(...) is Grafana's, not PromQL: check the selector inside it.
    rules = []
    for index, (where, expression) in enumerate(expressions):
        for variable, value in VARIABLES.items():
            expression = expression.replace(variable, value)
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", expression, re.S)
        if match:
            expression = match.group(1)
        rules.append({"record": f"dashboard:query_{index}", "expr": expression, "labels": {"panel": where}})
    with open(output_path, "w") as file:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, file, sort_keys=False)

    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    if not problems:
        used = set(METRIC.findall(dashboard_text + rules_text))
        unused = sorted(name for name in catalogue if not any(u == name or u.startswith(name + "_") for u in used))
        print(f"ok {dashboard_path}: {len(expressions)} queries; dashboard and rules name only catalogued metrics"
              + (f" (not shown anywhere: {', '.join(unused)})" if unused else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
