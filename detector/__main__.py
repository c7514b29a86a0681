from common.runner import run_service
from common.settings import DetectorSettings
from detector.service import run

if __name__ == "__main__":
    run_service("detector", DetectorSettings, run)
