"""``python -m detector``."""

from common.runner import run_service
from detector.service import SERVICE

if __name__ == "__main__":
    run_service(SERVICE)
