"""deploy/grafana/livt-dashboard.json: its layout, and every query against what a real server exports.

No library kept here validates a dashboard against Grafana's schema offline (grafana-foundation-sdk
builds dashboards; its from_json ignores what it does not know), so the checks are structural,
plus every PromQL expression parsed (promql-parser) and its metric and label names compared with
the /metrics of a livt-serve running on a real artifact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import promql_parser
import pytest

from tests.serving.conftest import build_tiny_artifact, image_bytes, running_server

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "livt-dashboard.json"
# Labels Prometheus adds to every scraped series (the target's), not the server.
TARGET_LABELS = {"job", "instance"}
# Grafana's own variables, set when a panel's query is sent; a duration stands in for the parse.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "gauge", "heatmap", "table", "text"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Every sample name a real server exports after a prediction, with the label names it carries."""
    from prometheus_client.parser import text_string_to_metric_families

    from livt.serving import ServeSettings, create_app

    artifact = build_tiny_artifact(tmp_path_factory.mktemp("artifact") / "model.onnx")
    with running_server(create_app(ServeSettings(model=artifact))) as url:
        # Routes and batch histograms have series only once a request has been served.
        httpx.get(f"{url}/v2/health/ready").raise_for_status()
        png = image_bytes((20, 20))
        httpx.post(f"{url}/v1/predict", content=png, headers={"Content-Type": "image/png"}).raise_for_status()
        text = httpx.get(f"{url}/metrics").text
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def _queries(dashboard: dict) -> Iterator[tuple[str, str, str]]:
    """``(where, expression, legend)`` of every panel target and every query variable."""
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield (
                f"panel {panel['title']!r} {target['refId']}",
                target["expr"],
                target.get("legendFormat", ""),
            )
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            yield f"variable {var['name']}", var["query"]["query"], ""


def _parse(expression: str):
    """Grafana's variables replaced as Grafana does before it sends the query, then PromQL parsed."""
    for name, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(f"${name}", value)
    match = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", expression)
    if match:  # Grafana's variable query: label_values(selector, label)
        return promql_parser.parse(match.group(1) or "up"), {match.group(2)}
    return promql_parser.parse(expression), set()


def _walk(node) -> Iterator[tuple[str | None, set[str]]]:
    """Every vector selector's metric name with its matcher labels, and every grouping's labels (name None)."""
    p = promql_parser
    if isinstance(node, p.VectorSelector):
        yield node.name, {m.name for m in node.matchers.matchers if m.name != "__name__"}
    elif isinstance(node, p.MatrixSelector):
        yield from _walk(node.vector_selector)
    elif isinstance(node, p.Call):
        for arg in node.args:
            yield from _walk(arg)
    elif isinstance(node, p.AggregateExpr):
        if node.modifier is not None:
            yield None, set(node.modifier.labels)
        yield from _walk(node.expr)
        if node.param is not None:
            yield from _walk(node.param)
    elif isinstance(node, p.BinaryExpr):
        if node.modifier is not None:
            matching = node.modifier.matching
            yield (
                None,
                set(matching.labels if matching is not None else []) | set(node.modifier.group_labels or []),
            )
        yield from _walk(node.lhs)
        yield from _walk(node.rhs)
    elif isinstance(node, (p.ParenExpr, p.UnaryExpr, p.SubqueryExpr)):
        yield from _walk(node.expr)
    else:
        assert isinstance(node, (p.NumberLiteral, p.StringLiteral)), type(node)


def test_every_query_uses_metrics_and_labels_the_server_exports(exported: dict[str, set[str]]):
    queried: set[str] = set()
    for where, expression, legend in _queries(_dashboard()):
        tree, extra_labels = _parse(expression)
        found = list(_walk(tree))
        metrics = {name for name, _ in found if name is not None}
        assert metrics, f"{where}: no metric in {expression!r}"
        unknown = {m for m in metrics if m not in exported and m != "up"}
        assert not unknown, f"{where}: {sorted(unknown)} not in the server's /metrics"
        queried |= metrics
        # A label the metrics do not carry matches nothing (a filter) or groups everything into one series.
        known = TARGET_LABELS | {label for m in metrics for label in exported.get(m, set())}
        used = extra_labels | {label for _, labels in found for label in labels}
        used |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert used <= known, f"{where}: labels {sorted(used - known)} not on {sorted(metrics)}"

    # Every family the server exports is on the dashboard (its _total, _bucket, _sum or _count).
    families = {
        re.sub(r"_(total|bucket|sum|count|created)$", "", name)
        for name in exported
        if name.startswith("livt_")
    }
    missing = {
        f for f in families if not any(re.sub(r"_(total|bucket|sum|count)$", "", q) == f for q in queried)
    }
    assert not missing, f"exported but on no panel: {sorted(missing)}"


def test_the_label_shift_metrics_are_on_the_dashboard():
    """The issue's list, by name: a panel dropped by mistake fails here even if its family were renamed."""
    expressions = " ".join(expression for _, expression, _ in _queries(_dashboard()))
    for name in ("livt_prior_estimate{", "livt_prior_estimate_std{", "livt_prior_estimate_images{",
                 "livt_prior_distance_train{", "livt_predicted_images_total{", "livt_http_requests_total{",
                 "livt_http_request_duration_seconds_bucket{", "livt_http_requests_in_flight{",
                 "livt_queue_seconds_bucket{", "livt_inference_seconds_bucket{", "livt_batch_size_bucket{"):  # fmt: skip
        assert name in expressions, name


def test_layout_and_datasource():
    dashboard = _dashboard()
    assert dashboard["title"] and re.fullmatch(r"[\w-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )

    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["w"] > 0 and box["x"] + box["w"] <= 24 and box["h"] > 0, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[x, y]!r}"
                cells[x, y] = panel["title"]
        if panel["type"] == "row":
            continue
        # The dashboard's own datasource variable: imported into any Grafana, it asks for a Prometheus.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("description"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        unit = panel["fieldConfig"]["defaults"].get("unit")
        if any("_seconds_bucket" in t["expr"] for t in panel["targets"]):
            assert unit == "s", panel["title"]


def test_every_variable_a_query_uses_is_defined():
    dashboard = _dashboard()
    defined = {var["name"] for var in dashboard["templating"]["list"]} | set(GRAFANA_VARIABLES)
    for where, expression, _ in _queries(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", expression))
        assert used <= defined, f"{where}: {sorted(used - defined)}"
