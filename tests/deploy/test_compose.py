"""The compose files: valid for Compose in every combination, and what they run is what the
deploy issue asks for (only the gateway, Prometheus and Grafana on the host; Redis with AOF on
a named volume; health checks and healthy dependencies; no default Grafana password; Kafka
one switch away), in the development and production files alike; and the notifier, behind a
profile, with its file of channels mounted read-only and its secrets from .env."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from common.settings import GatewaySettings
from tests.support.deploy import (
    APP_SERVICES,
    COMBOS,
    ENV_EXAMPLE,
    INFRA,
    NOTIFY_MOUNT,
    NOTIFY_SECRETS,
    PUBLISHED,
    REQUIRED,
    compose,
    environment,
    render,
    seconds,
    write_env_file,
)
from tests.support.prometheus import scrape_targets


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each combination rendered with .env.example as shipped (plus the required values)."""
    env_file = write_env_file(tmp_path_factory.mktemp("env") / ".env")
    return {combo: render(combo, env_file) for combo in COMBOS}


@pytest.mark.parametrize("all_settings", [False, True], ids=["example", "every-setting"])
@pytest.mark.parametrize("combo", COMBOS)
def test_config_is_valid(combo: str, all_settings: bool, tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / ".env", all_settings=all_settings)
    result = compose(combo, env_file, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


@pytest.mark.parametrize("combo", COMBOS)
def test_grafana_admin_password_is_required(combo: str, tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / ".env", GRAFANA_ADMIN_PASSWORD="")
    result = compose(combo, env_file, "config", "-q")
    assert result.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD in infra/.env" in result.stderr


@pytest.mark.parametrize("variable", ["IMAGE_REPOSITORY", "IMAGE_TAG"])
@pytest.mark.parametrize("combo", ["prod", "prod+kafka"])
def test_production_image_is_chosen_in_env(combo: str, variable: str, tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / ".env", all_settings=False, **{variable: ""})
    result = compose(combo, env_file, "config", "-q")
    assert result.returncode != 0
    assert f"set {variable} in infra/.env" in result.stderr


@pytest.mark.parametrize("combo", COMBOS)
def test_only_the_proxy_prometheus_and_grafana_are_published(
        combo: str, configs: dict[str, dict[str, Any]]) -> None:
    services = configs[combo]["services"]
    published = {name: service["ports"] for name, service in services.items()
                 if service.get("ports")}
    assert set(published) == set(PUBLISHED)
    for name, ports in published.items():
        assert len(ports) == 1
        host_ip, host_port, target = str(ports[0]).rsplit(":", 2)
        assert target == f"{PUBLISHED[name]}/tcp"
        assert host_port == str(PUBLISHED[name])
        # The page is for the LAN; the monitoring stays on this machine unless chosen.
        assert host_ip == ("0.0.0.0" if name == "proxy" else "127.0.0.1")
    for name in ("ingestor", "detector", "gateway", "notifier", "redis", "kafka"):
        assert not services.get(name, {}).get("ports"), name
    assert "network_mode" not in str(services)


def test_host_addresses_and_ports_come_from_env(tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / ".env", GATEWAY_BIND_ADDRESS="127.0.0.1", GATEWAY_HOST_PORT="18080",
        MONITORING_BIND_ADDRESS="0.0.0.0", PROMETHEUS_HOST_PORT="19090",
        GRAFANA_HOST_PORT="13000")
    for combo in COMBOS:
        services = render(combo, env_file)["services"]
        assert services["proxy"]["ports"] == ["127.0.0.1:18080:8080/tcp"]
        assert services["prometheus"]["ports"] == ["0.0.0.0:19090:9090/tcp"]
        assert services["grafana"]["ports"] == ["0.0.0.0:13000:3000/tcp"]


@pytest.mark.parametrize("combo", ["dev", "prod"])
def test_the_gateway_trusts_the_page_where_the_host_publishes_it(combo: str,
                                                                 tmp_path: Path) -> None:
    """The container's port is not the host's: the published one is among the page's own
    origins, and .env's ALLOWED_ORIGINS (a LAN name, a proxy's origin) come on top."""
    for extra, wanted in (("", set()), ("https://alerts.example.com",
                                        {"https://alerts.example.com"})):
        env_file = write_env_file(tmp_path / ".env", GATEWAY_HOST_PORT="18080",
                                  ALLOWED_ORIGINS=extra)
        env = environment(render(combo, env_file)["services"]["gateway"])
        settings = GatewaySettings.model_validate({"allowed_origins": env["ALLOWED_ORIGINS"]})
        assert settings.origins == {"http://localhost:18080", "http://127.0.0.1:18080",
                                    *wanted}


@pytest.mark.parametrize("combo", COMBOS)
def test_the_proxy_fronts_several_gateway_replicas(
        combo: str, configs: dict[str, dict[str, Any]]) -> None:
    """nginx, on the files of infra/nginx, in front of the gateway service, whose name
    resolves to every replica; the gateways allow the origin the page is opened at."""
    services = configs[combo]["services"]
    gateway, proxy = services["gateway"], services["proxy"]
    assert gateway["deploy"]["replicas"] >= 2
    env = environment(proxy)
    assert env["GATEWAY_UPSTREAM"] == f"gateway:{environment(gateway)['GATEWAY_PORT']}"
    assert env["PROXY_PORT"] == str(PUBLISHED["proxy"])
    mounts = {target: source for source, target, _ in (v.split(":") for v in proxy["volumes"])}
    assert Path(mounts["/etc/nginx/nginx.conf"]) == INFRA / "nginx" / "nginx.conf"
    assert Path(mounts["/etc/nginx/templates"]) == INFRA / "nginx" / "templates"
    assert re.fullmatch(r"nginx:\d+\.\d+(\.\d+)?-alpine", proxy["image"])
    assert proxy["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert proxy["read_only"] is True
    origins = GatewaySettings.model_validate(
        {"allowed_origins": environment(gateway)["ALLOWED_ORIGINS"]}).origins
    assert f"http://localhost:{PUBLISHED['proxy']}" in origins


@pytest.mark.parametrize("combo", COMBOS)
def test_redis_appends_to_a_named_volume(combo: str, configs: dict[str, dict[str, Any]]) -> None:
    config = configs[combo]
    redis = config["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "redis-data:/data:rw" in redis["volumes"]
    assert "redis-data" in config["volumes"]


@pytest.mark.parametrize("combo", COMBOS)
def test_data_lives_on_named_volumes(combo: str, configs: dict[str, dict[str, Any]]) -> None:
    config = configs[combo]
    expected = {"redis": "redis-data:/data", "prometheus": "prometheus-data:/prometheus",
                "grafana": "grafana-data:/var/lib/grafana"}
    if "kafka" in combo:
        expected["kafka"] = "kafka-data:/var/lib/kafka/data"
    for service, mount in expected.items():
        assert f"{mount}:rw" in config["services"][service]["volumes"], service
    assert set(config["volumes"]) == {m.split(":")[0] for m in expected.values()}
    for name in APP_SERVICES:
        # The services keep no state of their own: a read-only root, nothing mounted but
        # the notifier's configuration, read-only.
        assert config["services"][name].get("read_only") is True
        volumes = config["services"][name].get("volumes") or []
        assert volumes == ([f"{INFRA / 'notify.toml'}:{NOTIFY_MOUNT}:ro"]
                           if name == "notifier" else []), name


@pytest.mark.parametrize("combo", COMBOS)
def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies(
        combo: str, configs: dict[str, dict[str, Any]]) -> None:
    services = configs[combo]["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test, name
        assert test[0] in {"CMD", "CMD-SHELL"}, name
        for dependency, how in (service.get("depends_on") or {}).items():
            assert how == {"condition": "service_healthy"}, (name, dependency)
    bus = {"redis", "kafka"} if "kafka" in combo else {"redis"}
    for name in APP_SERVICES:
        assert set(services[name]["depends_on"]) == bus, name
        assert services[name]["healthcheck"]["test"] == [
            "CMD", "python", "-m", "common.healthcheck", name]
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}


@pytest.mark.parametrize("combo", COMBOS)
def test_services_drain_before_docker_kills_them(
        combo: str, configs: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        service = configs[combo]["services"][name]
        drain = float(environment(service)["SHUTDOWN_TIMEOUT_S"] or 0)
        assert drain > 0
        assert seconds(service["stop_grace_period"]) >= drain + 5, name


@pytest.mark.parametrize("combo", COMBOS)
def test_grafana_has_no_default_admin_password(
        combo: str, configs: dict[str, dict[str, Any]]) -> None:
    env = environment(configs[combo]["services"]["grafana"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == REQUIRED["GRAFANA_ADMIN_PASSWORD"]
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    for path in [*INFRA.glob("docker-compose*.yml"), ENV_EXAMPLE]:
        text = path.read_text().lower()
        assert "admin/admin" not in text, path
        assert "password=admin" not in text, path
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=$", ENV_EXAMPLE.read_text(), re.MULTILINE)


def test_kafka_is_one_switch_away(configs: dict[str, dict[str, Any]]) -> None:
    """The override changes the services' BUS_URL and nothing else about them (their new
    dependency aside), and runs a single KRaft node on the internal network."""
    for base in ("dev", "prod"):
        on_redis, on_kafka = configs[base]["services"], configs[f"{base}+kafka"]["services"]
        for name in APP_SERVICES:
            before, after = dict(on_redis[name]), dict(on_kafka[name])
            env_before, env_after = before.pop("environment"), after.pop("environment")
            assert {k for k in env_after if env_after[k] != env_before.get(k)} == {"BUS_URL"}
            assert env_before["BUS_URL"] == "redis://redis:6379/0"
            assert env_after["BUS_URL"] == "kafka://kafka:9092"
            assert after.pop("depends_on") == {**before.pop("depends_on"),
                                               "kafka": {"condition": "service_healthy"}}
            assert before == after, name
        assert set(on_kafka) - set(on_redis) == {"kafka"}
    kafka = configs["dev+kafka"]["services"]["kafka"]
    env = environment(kafka)
    assert set((env["KAFKA_PROCESS_ROLES"] or "").split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in name for name in env)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"])


def test_development_and_production_run_the_same_stack(
        configs: dict[str, dict[str, Any]]) -> None:
    """prod differs from dev only in where the image comes from and in its limits."""
    for base in ("", "+kafka"):
        dev, prod = configs["dev" + base]["services"], configs["prod" + base]["services"]
        assert set(dev) == set(prod)
        for name in dev:
            d, p = dict(dev[name]), dict(prod[name])
            deploy = p.pop("deploy")
            limits = deploy.pop("resources")["limits"]
            assert set(limits) == {"cpus", "memory"}, name
            # The rest of deploy (the gateway's replicas) is the same in both.
            assert d.pop("deploy", {}).get("replicas") == deploy.pop("replicas", None), name
            assert not deploy, name
            if name in APP_SERVICES:
                assert d.pop("build") == {"context": str(INFRA.parent),
                                          "dockerfile": "infra/Dockerfile"}
                assert d.pop("image") == "binance-alerter:local"
                assert p.pop("image") == "{IMAGE_REPOSITORY}:{IMAGE_TAG}".format(**REQUIRED)
            assert d == p, name
    for name, service in configs["prod+kafka"]["services"].items():
        assert service["restart"] == "unless-stopped", name
        assert service["logging"]["options"]["max-size"], name


def test_compose_substitutes_only_documented_variables() -> None:
    """Everything host-specific comes from .env, and each such name is in .env.example."""
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(),
                                re.MULTILINE))
    for path in INFRA.glob("docker-compose*.yml"):
        text = path.read_text()
        substituted = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
        passed_through = set()
        # (YAML merge keys are resolved by the loader: anchors' names are included.)
        for service in (yaml.safe_load(text).get("services") or {}).values():
            passed_through |= {name for name, value in environment(service).items()
                               if value is None}
        assert substituted | passed_through <= documented, (path.name, sorted(
            (substituted | passed_through) - documented))
    assert "COMPOSE_PROJECT_NAME" in documented


def test_monitoring_configuration_matches_the_compose_services(
        configs: dict[str, dict[str, Any]]) -> None:
    """Prometheus' targets, Grafana's datasource and its dashboards path (files of the
    observability work) point at what the compose files run and mount."""
    services = configs["dev"]["services"]
    ports = {"ingestor": "INGESTOR_METRICS_PORT", "detector": "DETECTOR_METRICS_PORT",
             "gateway": "GATEWAY_PORT", "notifier": "NOTIFIER_METRICS_PORT"}
    prometheus_yml = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    targets = {target for found in scrape_targets(prometheus_yml).values() for target in found}
    assert targets == {f"{name}:{environment(services[name])[var]}"
                       for name, var in ports.items()}
    for rule_file in prometheus_yml.get("rule_files", []):
        assert (INFRA / "prometheus" / rule_file).is_file(), rule_file

    mounts = {}
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source, target, _ = volume.split(":")
            mounts[target] = source
    assert Path(mounts["/etc/prometheus"]) == INFRA / "prometheus"
    assert Path(mounts["/etc/grafana/provisioning"]) == INFRA / "grafana" / "provisioning"
    assert Path(mounts["/var/lib/grafana/dashboards"]) == INFRA / "grafana" / "dashboards"
    assert list((INFRA / "grafana" / "dashboards").glob("*.json"))
    prometheus_cmd = " ".join(services["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus_cmd

    provisioning = INFRA / "grafana" / "provisioning"
    sources = [source for path in (provisioning / "datasources").glob("*.y*ml")
               for source in yaml.safe_load(path.read_text())["datasources"]]
    prometheus_url = urlsplit(next(s["url"] for s in sources if s["type"] == "prometheus"))
    assert (prometheus_url.hostname, prometheus_url.port) == ("prometheus", 9090)
    providers = [provider for path in (provisioning / "dashboards").glob("*.y*ml")
                 for provider in yaml.safe_load(path.read_text())["providers"]]
    assert {p["options"]["path"] for p in providers} == {"/var/lib/grafana/dashboards"}


@pytest.mark.parametrize("combo", COMBOS)
def test_the_notifier_runs_only_with_the_notify_profile(
        combo: str, configs: dict[str, dict[str, Any]]) -> None:
    """Without a file of channels there is nothing to notify: a plain ``up`` runs the rest,
    ``COMPOSE_PROFILES=notify`` (or ``--profile notify``) adds the notifier."""
    services = configs[combo]["services"]
    notifier = services["notifier"]
    assert notifier["profiles"] == ["notify"]
    assert [name for name, service in services.items() if service.get("profiles")] == [
        "notifier"]
    assert notifier["command"] == ["python", "-m", "notifier"]
    assert notifier["image"] == services["detector"]["image"]
    env = environment(notifier)
    assert env["NOTIFIER_METRICS_PORT"] == "9103"
    assert env["METRICS_HOST"] == "0.0.0.0"
    assert notifier["expose"] == ["9103"]
    assert env["BUS_URL"] == environment(services["detector"])["BUS_URL"]
    assert re.search(r"^# ?COMPOSE_PROFILES=notify$", ENV_EXAMPLE.read_text(), re.MULTILINE)


@pytest.mark.parametrize("combo", COMBOS)
def test_the_notifier_reads_its_channels_from_a_read_only_file(combo: str,
                                                              tmp_path: Path) -> None:
    """NOTIFY_CONFIG is the mount point of a host file: ./notify.toml beside the compose
    files, or the one NOTIFY_CONFIG_FILE names."""
    choices: list[tuple[dict[str, str], Path]] = [
        ({}, INFRA / "notify.toml"),
        ({"NOTIFY_CONFIG_FILE": "/srv/alerts/notify.toml"}, Path("/srv/alerts/notify.toml"))]
    for chosen, source in choices:
        env_file = write_env_file(tmp_path / ".env", all_settings=False, **chosen)
        notifier = render(combo, env_file)["services"]["notifier"]
        assert environment(notifier)["NOTIFY_CONFIG"] == NOTIFY_MOUNT
        assert notifier["volumes"] == [f"{source}:{NOTIFY_MOUNT}:ro"]


@pytest.mark.parametrize("combo", COMBOS)
def test_the_notifier_takes_its_secrets_from_env_never_from_the_files(
        combo: str, tmp_path: Path) -> None:
    """Tokens and webhook URLs are passed through from .env, never written in a compose
    file; set in .env, each reaches the notifier and no other service."""
    for path in INFRA.glob("docker-compose*.yml"):
        notifier = (yaml.safe_load(path.read_text())["services"] or {}).get("notifier") or {}
        env = environment(notifier)
        for name in NOTIFY_SECRETS:
            # (The bus overrides only switch BUS_URL.)
            assert name in env or path.name.endswith(("kafka.yml", "sentinel.yml")), (
                path.name, name)
            assert env.get(name) is None, (path.name, name)
    # The example file's secrets are the ones passed: copied as it is, it works.
    example = (INFRA / "notify.example.toml").read_text()
    assert set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", example)) - {"VAR"} == set(NOTIFY_SECRETS)
    values = {name: f"value-of-{name.lower()}" for name in NOTIFY_SECRETS}
    env_file = write_env_file(tmp_path / ".env", all_settings=False, **values)
    services = render(combo, env_file)["services"]
    for name, value in values.items():
        assert environment(services["notifier"])[name] == value
        for other, service in services.items():
            if other != "notifier":
                assert name not in environment(service), (other, name)
