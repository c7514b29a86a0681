"""The shipped Prometheus configuration and alerting rules, checked by Prometheus' own
``promtool``: syntax, the rendered test copy, and unit tests of every alert."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.prometheus import (
    INTERVAL_KEYS,
    RULES_FILE,
    SHIPPED_CONFIG,
    SHIPPED_TARGETS,
    promtool_binary,
    render_config,
    scrape_targets,
)

HERE = Path(__file__).resolve().parent
ALERT_NAMES = {"BinanceFeedStale", "DetectorLagGrowing", "NoTicks", "GatewayDown",
               "GatewayNotReadingAlerts", "ServiceDown", "NotifierChannelFailing",
               "NotifierDeadLetters", "NotifierDown", "PoisonEntries"}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([promtool_binary(), *map(str, args)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, f"promtool {args}:\n{done.stdout}\n{done.stderr}"
    return done


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_promtool_accepts_the_shipped_config_and_its_rules() -> None:
    checked = promtool("check", "config", SHIPPED_CONFIG)
    assert "1 rule files found" in checked.stdout
    promtool("check", "rules", RULES_FILE)


def test_every_alert_fires_on_its_failure_and_not_on_a_healthy_pipeline() -> None:
    promtool("test", "rules", HERE / "alerts_test.yml")


def test_the_shipped_config_scrapes_the_four_services_by_compose_name() -> None:
    config = load(SHIPPED_CONFIG)
    assert scrape_targets(config) == {job: [target] for job, target in SHIPPED_TARGETS.items()}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # Each gateway replica scraped on its own, not whichever one a name happens to reach;
    # the notifier (a compose profile) only when it runs, so none is "down" when it is off.
    for name, port in (("gateway", 8080), ("notifier", 9103)):
        assert "static_configs" not in jobs[name]
        assert jobs[name]["dns_sd_configs"] == [{"names": [name], "type": "A", "port": port}]
    assert config["rule_files"] == [RULES_FILE.name]


def test_the_rendered_copy_differs_only_in_targets_and_intervals(tmp_path: Path) -> None:
    targets = {"ingestor": "127.0.0.1:1001", "detector": "127.0.0.1:1002",
               "gateway": "127.0.0.1:1003", "notifier": "127.0.0.1:1004"}
    rendered = render_config(tmp_path, targets, "1s")
    promtool("check", "config", rendered)
    shipped, copy = load(SHIPPED_CONFIG), load(rendered)
    discovery = {job["job_name"]: {k: job[k] for k in ("static_configs", "dns_sd_configs")
                                   if k in job} for job in shipped["scrape_configs"]}
    for job in copy["scrape_configs"]:
        assert job.pop("static_configs") == [{"targets": [targets[job["job_name"]]]}]
        job.update(discovery[job["job_name"]])
    for key in INTERVAL_KEYS:
        assert copy["global"][key] == "1s"
        copy["global"][key] = shipped["global"][key]
    assert copy == shipped
    assert (tmp_path / RULES_FILE.name).read_bytes() == RULES_FILE.read_bytes()


def test_every_rule_waits_and_explains_itself() -> None:
    rules = [rule for group in load(RULES_FILE)["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == ALERT_NAMES
    for rule in rules:
        assert rule.get("for"), f"{rule['alert']} fires on a single evaluation"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
