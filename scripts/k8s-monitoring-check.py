"""The observability in the rendered overlays, checked offline (scripts/k8s-check.sh):
every ConfigMap labelled grafana_dashboard=1 holds dashboards that parse, whose panels each
have a datasource and queries; those queries and the PrometheusRules' expressions name only
metrics that exist: recorded by the code (metrics::counter!/gauge!/histogram! in services/
and shared/, and the counters! macro's `metric "..."`), exported by daprd, or by Strimzi's Kafka Exporter. A `_bucket` series is only
for a histogram the exporter renders with buckets (a `*_seconds` name; the others are
summaries, see todo_telemetry::serve_metrics).
    python3 scripts/k8s-monitoring-check.py target/k8s/dev.yaml target/k8s/prod.yaml ..."""
import json
import re
import sys
from pathlib import Path

import yaml

# Exported by daprd 1.18 (pkg/diagnostics, OpenCensus views: counts, and latencies as
# histograms), by Strimzi's Kafka Exporter, and Prometheus's own `up`.
EXTERNAL = {
    "dapr_component_pubsub_ingress_count", "dapr_component_pubsub_ingress_latencies",
    "dapr_component_pubsub_egress_count", "dapr_component_pubsub_egress_latencies",
    "dapr_component_pubsub_egress_bulk_count", "dapr_component_pubsub_egress_bulk_event_count",
    "dapr_component_pubsub_ingress_bulk_count", "dapr_component_pubsub_ingress_bulk_event_count",
    "kafka_consumergroup_lag", "kafka_consumergroup_current_offset", "up",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "and", "or", "unless", "inf", "nan"}


def recorded_metrics():
    found = {}
    for f in sorted(Path("services").rglob("*.rs")) + sorted(Path("shared").rglob("*.rs")):
        if "tests" in f.parts:
            continue
        for kind, name in re.findall(r'metrics::(counter|gauge|histogram)!\(\s*"([a-z_:][a-z0-9_:]*)"', f.read_text()):
            found[name] = kind
        # todo_service::counters! declares `metric "<name>_total";` (Counter::new(metric, result)).
        for name in re.findall(r'^\s*metric\s+"([a-z_:][a-z0-9_:]*)";', f.read_text(), re.M):
            found.setdefault(name, "counter")
    return found


def metrics_of(expr):
    """The metric names a PromQL expression selects (not functions, keywords, labels)."""
    e = re.sub(r'\{[^}]*\}', " ", expr)   # label matchers
    e = re.sub(r'"[^"]*"', " ", e)         # strings
    e = re.sub(r'\[[^\]]*\]', " ", e)      # ranges
    e = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', " ", e)
    names = set()
    for m in re.finditer(r'[a-zA-Z_:][a-zA-Z0-9_:]*', e):
        n = m.group(0)
        if e[m.end():].lstrip().startswith("(") or n.lower() in KEYWORDS:
            continue
        if m.start() > 0 and e[m.start() - 1] in "$.":
            continue  # Grafana variables ($__rate_interval), numbers like 0.99
        names.add(n)
    return names


def main(paths):
    recorded = recorded_metrics()
    known = set(recorded) | EXTERNAL
    errors, names = [], set()

    def check(name, where):
        names.add(name)
        base = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in known:
                base = name[: -len(suffix)]
                if suffix == "_bucket" and recorded.get(base) == "histogram" and not base.endswith("_seconds"):
                    errors.append(f"{where}: {name}: {base} is rendered as a summary, without buckets; use {base}{{quantile=\"0.99\"}}")
                break
        if base not in known:
            errors.append(f"{where}: metric {name} is recorded nowhere in services/ or shared/ (nor by daprd or the Kafka Exporter)")

    docs = [d for p in paths for d in yaml.safe_load_all(Path(p).read_text()) if d]
    dashboards = [d for d in docs if d["kind"] == "ConfigMap"
                  and (d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if not dashboards:
        errors.append('no ConfigMap labelled grafana_dashboard: "1" in any overlay')
    seen, panels, queries, rules = set(), 0, 0, 0
    for cm in dashboards:
        for key, text in (cm.get("data") or {}).items():
            if (key, text) in seen:
                continue  # the same dashboard in several overlays
            seen.add((key, text))
            try:
                dash = json.loads(text)
            except json.JSONDecodeError as e:
                errors.append(f"ConfigMap {cm['metadata']['name']}/{key}: not JSON: {e}")
                continue
            for k in ("uid", "title", "panels"):
                if k not in dash:
                    errors.append(f"{key}: no {k}")
            ids = set()
            for p in dash.get("panels", []):
                where = f"{key}: panel {p.get('id')} {p.get('title')!r}"
                if p.get("id") in ids:
                    errors.append(f"{where}: duplicate id")
                ids.add(p.get("id"))
                if p.get("type") == "row":
                    continue
                panels += 1
                if not p.get("datasource"):
                    errors.append(f"{where}: no datasource")
                if not p.get("targets"):
                    errors.append(f"{where}: no targets")
                for t in p.get("targets", []):
                    if not (t.get("expr") or "").strip():
                        errors.append(f"{where}: target {t.get('refId')} has no expr")
                        continue
                    queries += 1
                    for n in metrics_of(t["expr"]):
                        check(n, where)
    seen_rules = set()
    for r in (d for d in docs if d["kind"] == "PrometheusRule"):
        for g in r["spec"]["groups"]:
            for rule in g["rules"]:
                if (rule.get("alert"), rule["expr"]) in seen_rules:
                    continue  # the same rule in several overlays
                seen_rules.add((rule.get("alert"), rule["expr"]))
                rules += 1
                for n in metrics_of(rule["expr"]):
                    check(n, f"PrometheusRule {r['metadata']['name']}: {rule.get('alert') or rule.get('record')}")
    for e in sorted(set(errors)):
        print(e, file=sys.stderr)
    if errors:
        return 1
    print(f"{len(seen)} dashboard(s), {panels} panels, {queries} queries, {rules} alert rules; "
          f"{len(names)} metrics named, each recorded by the code, daprd or the Kafka Exporter")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
