"""The Grafana provisioning and the 'Binance Alerter Overview' dashboard, checked without a
Grafana (none installs here): structure, layout, the datasource it names, the metrics it
plots, and the README's metrics table against what the services really export."""

from __future__ import annotations

import itertools
import re
from typing import Final

import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from detector.metrics import DetectorMetrics
from gateway.metrics import Metrics as GatewayMetrics
from ingestor.metrics import IngestorMetrics, new_registry
from notifier.metrics import NotifierMetrics
from tests.support.dashboard import DASHBOARD, GRAFANA, ROOT, dashboard, panel_exprs, panels
from tests.support.prometheus import RULES_FILE

DATASOURCES: Final = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS: Final = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
GRID_COLUMNS: Final = 24
SERVICES: Final = ("ingestor", "detector", "gateway", "notifier")
_METRIC_NAME: Final = re.compile(r"\b((?:ingestor|detector|gateway|notifier)_[a-z0-9_]+)\b")
_SUFFIXES: Final = {"counter": ("_total",), "gauge": ("",),
                    "histogram": ("_bucket", "_count", "_sum")}


def exported() -> dict[str, MetricWrapperBase]:
    """Every metric the four services define, by exposed base name, from fresh
    instances (the gateway's HTTP metrics come from instrumenting an app)."""
    gateway = GatewayMetrics()
    gateway.instrument(FastAPI())
    registries: list[CollectorRegistry] = [
        IngestorMetrics(new_registry()).registry, DetectorMetrics().registry, gateway.registry,
        NotifierMetrics().registry]
    metrics: dict[str, MetricWrapperBase] = {}
    for registry in registries:
        # The registry keeps its collectors privately; for a test, that is the only way to
        # see the label names of a metric that has no sample yet.
        for collector in registry._collector_to_names:
            if isinstance(collector, MetricWrapperBase):
                metrics[collector._name] = collector
    return metrics


def sample_names(metrics: dict[str, MetricWrapperBase]) -> set[str]:
    return {name + suffix for name, metric in metrics.items()
            for suffix in _SUFFIXES[str(metric._type)]}


def test_the_dashboard_has_a_stable_identity_and_the_provisioned_datasource() -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert [(s["type"], s["uid"]) for s in sources] == [("prometheus", "prometheus")]
    expected = {"type": "prometheus", "uid": sources[0]["uid"]}
    board = dashboard()
    assert board["uid"] == "binance-alerter-overview"
    assert board["title"] == "Binance Alerter Overview"
    assert board["templating"]["list"] == []  # no datasource variable: the uid is fixed
    for panel in panels():
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
            assert target["expr"].strip(), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        assert panel["fieldConfig"]["defaults"]["unit"], f"{panel['title']} has no unit"


def test_the_provider_loads_the_dashboards_directory() -> None:
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert len(providers) == 1
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert sorted(p.name for p in DASHBOARD.parent.iterdir()) == [DASHBOARD.name]


def test_panels_tile_the_grid_without_overlapping() -> None:
    every = dashboard()["panels"]
    assert len({p["id"] for p in every}) == len(every)
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        pos = panel["gridPos"]
        assert min(pos["w"], pos["h"]) > 0, panel["title"]
        assert min(pos["x"], pos["y"]) >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= GRID_COLUMNS, panel["title"]
        for x, y in itertools.product(range(pos["x"], pos["x"] + pos["w"]),
                                      range(pos["y"], pos["y"] + pos["h"])):
            assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
            cells[(x, y)] = panel["title"]


@pytest.mark.parametrize(("what", "pattern"), [
    ("connected clients", r"gateway_clients_connected"),
    ("alerts total by direction", r"by \(direction\) \(detector_alerts_total\)"),
    ("alert rate by direction", r"by \(direction\) \(rate\(detector_alerts_total"),
    ("end-to-end p50", r"histogram_quantile\(0\.5, .*gateway_end_to_end_latency_seconds"),
    ("end-to-end p95", r"histogram_quantile\(0\.95, .*gateway_end_to_end_latency_seconds"),
    ("end-to-end p99", r"histogram_quantile\(0\.99, .*gateway_end_to_end_latency_seconds"),
    ("HTTP p95", r"histogram_quantile\(0\.95, .*gateway_http_request_duration_seconds"),
    ("ingest rate", r"rate\(ingestor_ticks_received_total"),
    ("reconnects", r"ingestor_reconnects_total"),
    ("consumer lag", r"detector_consumer_lag_entries"),
    ("dropped ticks", r"ingestor_ticks_dropped_total"),
    ("malformed frames", r"ingestor_malformed_frames_total"),
    ("feed alive", r"ingestor_seconds_since_last_frame"),
    ("the notifier up", r'up\{job=~"[^"]*\bnotifier\b'),
    ("messages sent per channel",
     r"sum by \(channel, kind\) \(rate\(notifier_messages_sent_total"),
    ("alert → accepted p50 per channel",
     r"histogram_quantile\(0\.5, sum by \(le, channel\) \(rate\(notifier_alert_accepted_seconds"),
    ("alert → accepted p99 per channel",
     r"histogram_quantile\(0\.99, sum by \(le, channel\) \(rate\(notifier_alert_accepted_seconds"),
    ("failures per reason", r"by \(channel, reason\) \(increase\(notifier_failures_total"),
    ("rate-limited waits", r"increase\(notifier_rate_limited_wait_seconds_total"),
    ("digests", r'notifier_messages_sent_total\{kind="digest"\}'),
    ("dead letters", r"by \(channel, reason\) \(increase\(notifier_dead_letters_total"),
    ("failing channels", r"by \(channel\) \(notifier_channel_failing\)"),
    ("queued alerts", r"by \(channel\) \(notifier_channel_queued_alerts\)"),
])
def test_the_dashboard_answers_the_operators_questions(what: str, pattern: str) -> None:
    assert any(re.search(pattern, expr) for expr in panel_exprs()), f"no panel shows {what}"


def test_every_metric_in_the_dashboard_and_the_rules_is_exported() -> None:
    known = sample_names(exported())
    used = set(_METRIC_NAME.findall("\n".join(panel_exprs())))
    used |= set(_METRIC_NAME.findall(RULES_FILE.read_text()))
    assert used - known == set()


def readme_metrics() -> dict[str, tuple[str, set[str]]]:
    """``| `name` | type | `label` (values), … | meaning |`` rows of the README's tables."""
    rows: dict[str, tuple[str, set[str]]] = {}
    row = re.compile(
        r"^\| `((?:ingestor|detector|gateway|notifier)_[a-z0-9_]+)` \| (\w+) \|([^|]*)\|")
    for line in (ROOT / "README.md").read_text().splitlines():
        match = row.match(line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} documented twice"
            # Label names are in backticks; their values, if listed, are not.
            rows[name] = (kind, set(re.findall(r"`(\w+)`", labels)))
    return rows


def test_the_readme_documents_every_metric_with_its_type_and_labels() -> None:
    documented = readme_metrics()
    actual = {(name + "_total" if m._type == "counter" else name): m
              for name, m in exported().items()}
    assert set(documented) == set(actual)
    for name, metric in actual.items():
        kind, labels = documented[name]
        assert kind == metric._type, name
        assert labels == set(metric._labelnames), name
