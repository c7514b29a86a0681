from common.runner import run_service
from notifier.service import SERVICE

if __name__ == "__main__":
    run_service(SERVICE)
