"""The Grafana dashboard is valid and only queries metrics the services export."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from sigverify_tally.service import OUTCOMES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "sigverify.json"
#: Modules that define the services' metrics.
METRIC_MODULES = ("sigverify_common.metrics", "sigverify_matching.consumer", "sigverify_tally.service")
BUILTIN = {"up"}


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def _exported() -> set[str]:
    for m in METRIC_MODULES:
        importlib.import_module(m)
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    for metric in REGISTRY.collect():
        names.update(metric.name + s for s in suffixes.get(metric.type, ("",)))
    return names


def test_dashboard_has_a_prometheus_datasource_variable_used_by_every_panel() -> None:
    d = _dashboard()
    assert d["schemaVersion"] >= 36 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"


def test_dashboard_covers_throughput_lag_decisions_latency_and_health() -> None:
    exprs = " ".join(t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", []))
    for needle in ("sigverify_consumed_records_total", "sigverify_consumer_lag",
                   "sigverify_match_decisions_total", "histogram_quantile(0.5",
                   "histogram_quantile(0.95", "sigverify_rpc_seconds_bucket", "sigverify_healthy"):
        assert needle in exprs, needle


def _row(title: str) -> list[dict[str, Any]]:
    """The panels under the row ``title`` (up to the next row)."""
    panels = sorted(_dashboard()["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == title)
    out = []
    for p in panels[start + 1:]:
        if p["type"] == "row":
            break
        out.append(p)
    return out


STATUTORY_GAUGES = ("sigverify_tally_required", "sigverify_tally_raw", "sigverify_tally_projected",
                    "sigverify_tally_not_sampled", "sigverify_tally_outcome",
                    "sigverify_tally_counties_closed", "sigverify_tally_counties")


def test_statutory_process_row_shows_every_statutory_gauge_per_petition() -> None:
    panels = _row("Statutory process")
    assert {p["type"] for p in panels} >= {"timeseries", "stat", "bargauge"}
    exported = _exported()
    exprs = []
    for p in panels:
        for t in p["targets"]:
            names = set(re.findall(r"\b(sigverify_\w+)\s*[{\[)]", t["expr"]))
            assert names and names <= exported, (p["title"], names - exported)
            assert 'petition=~"$petition"' in t["expr"], (p["title"], t["expr"])
            exprs.append(t["expr"])
    joined = " ".join(exprs)
    for gauge in STATUTORY_GAUGES:
        assert re.search(rf"\b{gauge}\{{", joined), gauge
    projected = next(p for p in panels if "sigverify_tally_projected{" in p["targets"][0]["expr"])
    assert "sigverify_tally_required{" in projected["targets"][0]["expr"]
    steps = projected["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps][1:] == [95, 110]
    assert projected["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"].startswith("line")
    # The outcome stat maps each of the gauge's outcomes to a name.
    outcome = next(p for p in panels if p["type"] == "stat")
    texts = {o["text"].replace(" ", "_") for m in outcome["fieldConfig"]["defaults"]["mappings"]
             for o in m["options"].values()}
    assert texts == set(OUTCOMES)
    for o in OUTCOMES:
        assert f'outcome="{o}"' in outcome["targets"][0]["expr"], o


def test_dashboard_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for p in _dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine


def test_dashboard_queries_only_exported_metrics() -> None:
    exported = _exported() | BUILTIN
    for p in _dashboard()["panels"]:
        for t in p.get("targets", []):
            names = set(re.findall(r"\b((?:sigverify_)\w+|up)\s*[{\[)]", t["expr"]))
            assert names, t["expr"]
            assert names <= exported, (p["title"], names - exported)
