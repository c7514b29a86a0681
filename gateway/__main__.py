"""``python -m gateway``: one process, or ``GATEWAY_WORKERS`` of them (``gateway.workers``)."""

from gateway.workers import run_gateway

if __name__ == "__main__":
    run_gateway()
