"""The Grafana dashboard is valid and only queries metrics the services export."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

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


def test_dashboard_queries_only_exported_metrics() -> None:
    exported = _exported() | BUILTIN
    for p in _dashboard()["panels"]:
        for t in p.get("targets", []):
            names = set(re.findall(r"\b((?:sigverify_)\w+|up)\s*[{\[)]", t["expr"]))
            assert names, t["expr"]
            assert names <= exported, (p["title"], names - exported)
