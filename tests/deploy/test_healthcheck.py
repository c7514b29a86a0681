"""``python -m common.healthcheck``: the probe the image and the compose files run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.healthcheck import health_url, main, probe
from tools.redis_server import free_port


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[int]:
    handler = type("Handler", (_Handler,), {"status": getattr(request, "param", 200)})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    for name in ("GATEWAY_HOST", "GATEWAY_PORT", "METRICS_HOST", "INGESTOR_METRICS_PORT",
                 "DETECTOR_METRICS_PORT", "NOTIFIER_METRICS_PORT", "NOTIFY_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_urls_follow_each_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert health_url("ingestor") == "http://127.0.0.1:9101/healthz"
    assert health_url("detector") == "http://127.0.0.1:9102/healthz"
    assert health_url("gateway") == "http://127.0.0.1:8080/healthz"
    monkeypatch.setenv("NOTIFY_CONFIG", "/etc/binance-alerter/notify.toml")  # required
    assert health_url("notifier") == "http://127.0.0.1:9103/healthz"
    monkeypatch.setenv("NOTIFIER_METRICS_PORT", "9203")
    assert health_url("notifier") == "http://127.0.0.1:9203/healthz"
    monkeypatch.setenv("GATEWAY_HOST", "::")
    monkeypatch.setenv("GATEWAY_PORT", "9000")
    monkeypatch.setenv("METRICS_HOST", "10.1.2.3")
    assert health_url("gateway") == "http://[::1]:9000/healthz"
    assert health_url("ingestor") == "http://10.1.2.3:9101/healthz"
    monkeypatch.setenv("METRICS_HOST", "fd00::5")
    assert health_url("detector") == "http://[fd00::5]:9102/healthz"
    with pytest.raises(ValueError, match="unknown service"):
        health_url("redis")


def test_healthy_only_on_200(server: int) -> None:
    assert probe(f"http://127.0.0.1:{server}/healthz", 2) is None
    assert "HTTP 404" in str(probe(f"http://127.0.0.1:{server}/other", 2))
    assert "refused" in str(probe(f"http://127.0.0.1:{free_port()}/healthz", 2)).lower()


@pytest.mark.parametrize("server", [503], indirect=True)
def test_an_unhealthy_answer_fails(server: int, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DETECTOR_METRICS_PORT", str(server))
    assert main(["detector"]) == 1
    assert "HTTP 503" in capsys.readouterr().err


def test_exit_codes(server: int, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    unused = str(free_port())
    monkeypatch.setenv("INGESTOR_METRICS_PORT", unused)
    monkeypatch.setenv("DETECTOR_METRICS_PORT", unused)
    monkeypatch.setenv("GATEWAY_PORT", str(server))
    assert main(["gateway"]) == 0
    assert main([]) == 0  # no service named: whichever of the three answers
    assert main(["ingestor"]) == 1
    assert "ingestor: http://127.0.0.1:" in capsys.readouterr().err
    monkeypatch.setenv("GATEWAY_PORT", "not-a-port")
    assert main(["gateway"]) == 1
    assert "invalid GATEWAY_PORT" in capsys.readouterr().err
