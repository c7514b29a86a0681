"""``python -m ingestor``."""

from common.runner import run_service
from common.settings import IngestorSettings
from ingestor.service import run

if __name__ == "__main__":
    run_service("ingestor", IngestorSettings, run)
