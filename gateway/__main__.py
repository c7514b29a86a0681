from common.runner import run_service
from common.settings import GatewaySettings
from gateway.service import run

if __name__ == "__main__":
    run_service("gateway", GatewaySettings, run)
