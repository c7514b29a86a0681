"""The ``binance-alerter`` console script: operator commands next to ``python -m <service>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.launcher import UpOptions, run_up


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binance-alerter",
        description="Real-time price-move alerts for Binance USDⓈ-M perpetual futures.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="run Redis and the three services locally",
        description="Run a local Redis-compatible server and the ingestor, detector and "
                    "gateway as separate processes. Settings come from the environment.")
    up.add_argument("--host", default="127.0.0.1",
                    help="gateway bind address (default 127.0.0.1; 0.0.0.0 to share)")
    up.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    up.add_argument("--bus-url", help="use this running Redis instead of starting one")
    up.add_argument("--redis-port", type=int, help="port for the started Redis (default free)")
    up.add_argument("--data-dir", type=Path,
                    help="keep Redis data here across runs (default: a temporary directory)")
    source = up.add_mutually_exclusive_group()
    source.add_argument("--binance-url", help="exchange WebSocket URL (a fake or replay server)")
    source.add_argument("--demo", action="store_true",
                        help="start the fake exchange with a lively scenario (no internet)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        if not 0 < args.port < 65536:
            print("binance-alerter up: --port must be 1..65535", file=sys.stderr)
            return 2
        return run_up(UpOptions(host=args.host, port=args.port, bus_url=args.bus_url,
                                redis_port=args.redis_port, data_dir=args.data_dir,
                                binance_url=args.binance_url, demo=args.demo))
    return 2


if __name__ == "__main__":
    sys.exit(main())
