"""deploy/monitoring: the alerting rules and the Grafana dashboard are valid PromQL (parsed by
promql-parser, the Rust parser's binding) over metrics, and labels, that moep-router exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from moep_router.metrics import RouterMetrics

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
TARGET_LABELS = {"job", "instance", "pod", "namespace"}  # Prometheus adds these to every series
TEMPLATE = re.compile(r"\{\{\s*(?:\$labels\.)?(\w+)\s*\}\}")


def _exported() -> dict[str, set[str]]:
    """Every series name the router's /metrics can carry -> its label names."""
    names = {}
    for metric in vars(RouterMetrics()).values():
        if isinstance(metric, MetricWrapperBase):
            for suffix in SUFFIXES[metric._type]:
                extra = {"le"} if suffix == "_bucket" else set()
                names[metric._name + suffix] = set(metric._labelnames) | extra
    return names


EXPORTED = _exported()


def check_expr(expr: str, shown_labels: set[str] = frozenset()) -> None:
    """Parse expr; every metric it reads must be exported, and every label it matches on,
    groups by or shows (legend, summary) must be one those metrics carry."""
    tree = promql_parser.parse(expr.replace("$__rate_interval", "5m"))
    read: set[str] = set()
    used = set(shown_labels)

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name in EXPORTED, f"{expr}: moep-router exports no {node.name}"
            read.add(node.name)
            used.update(m.name for m in node.matchers.matchers)
            return
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            used.update(node.modifier.labels)
        for attr in ("lhs", "rhs", "expr", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None:
                walk(child)
        for child in getattr(node, "args", None) or ():
            walk(child)

    walk(tree)
    assert read, f"{expr}: reads no metric"
    known = set().union(*(EXPORTED[n] for n in read)) | TARGET_LABELS
    assert used <= known, f"{expr}: labels {sorted(used - known)} are not on {sorted(read)}"


def _rules() -> list[dict]:
    doc = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _targets() -> list[dict]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t for p in dash["panels"] for t in p["targets"]]


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_alert_rule_reads_what_the_router_exports(rule):
    assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    shown = set(TEMPLATE.findall(rule["annotations"]["summary"])) - {"value"}
    check_expr(rule["expr"], shown)


def test_alert_names_are_unique():
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("target", _targets(), ids=lambda t: t["expr"][:60])
def test_dashboard_panel_reads_what_the_router_exports(target):
    check_expr(target["expr"], set(TEMPLATE.findall(target["legendFormat"])))


def test_dashboard_panels_have_unique_ids_and_the_datasource_input():
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dash["panels"])


@pytest.mark.parametrize("expr,message", [
    ("rate(moep_router_request_total[5m])", "exports no moep_router_request_total"),
    ('sum by (worker) (rate(moep_router_requests_total[5m]))', "labels ['worker']"),
    ('moep_router_queue_depth{endpoint="x"}', "labels ['endpoint']"),
    ("sum(rate(moep_router_flops_total[5m])", "unclosed"),
])
def test_the_check_fails_on_a_wrong_name_label_or_syntax(expr, message):
    with pytest.raises((AssertionError, ValueError), match=re.escape(message)):
        check_expr(expr)
