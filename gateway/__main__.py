"""``python -m gateway``."""

from common.runner import run_service
from gateway.service import SERVICE

if __name__ == "__main__":
    run_service(SERVICE)
