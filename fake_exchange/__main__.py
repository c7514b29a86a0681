"""`python -m fake_exchange`: the fake as its own process, for the demo and for end-to-end
tests that run every service as a real process. Faults are injected over HTTP
(`/control/...`, see `fake_exchange.control`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from fake_exchange.demo_board import DEMO_BOARD
from fake_exchange.recordings import recording_quotes
from fake_exchange.scenarios import demo_scenario, drifting_market, firehose, jump_scenario
from fake_exchange.server import FakeExchange

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fake_exchange.scenarios import Quote

logger = logging.getLogger(__name__)

SCENARIOS = ("demo", "drift", "jump", "firehose", "recording")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fake_exchange", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9443, help="0 picks a free port")
    p.add_argument("--scenario", choices=SCENARIOS, default="demo")
    p.add_argument("--symbols", type=int, default=None, help="number of symbols")
    p.add_argument("--interval", type=float, default=1.0, help="real seconds between frames")
    p.add_argument("--wall-clock", action="store_true", help="stamp event times at send time")
    p.add_argument("--file", help="recording to replay (--scenario recording)")
    p.add_argument("--jump-symbol", default="SYM007USDT")
    p.add_argument("--jump-pct", type=float, default=3.0)
    p.add_argument("--jump-at", type=int, default=5, help="frame index of the jump start")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loop", action="store_true", help="restart the scenario when it ends")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.scenario == "recording" and not args.file:
        p.error("--scenario recording needs --file")
    if args.interval < 0:
        p.error("--interval must be >= 0")
    if args.scenario == "demo" and args.symbols and not 1 <= args.symbols <= len(DEMO_BOARD):
        p.error(f"--symbols: the demo board has 1 to {len(DEMO_BOARD)} symbols")
    return args


def build_scenario(args: argparse.Namespace) -> Iterable[list[Quote]]:
    n = args.symbols
    if args.scenario == "demo":
        return demo_scenario(n or len(DEMO_BOARD), seed=args.seed)
    if args.scenario == "drift":
        return drifting_market(n or 700, seed=args.seed)
    if args.scenario == "jump":
        return jump_scenario(
            n or 700,
            jump_symbol=args.jump_symbol,
            at_frame=args.jump_at,
            pct=args.jump_pct,
            seed=args.seed,
        )
    if args.scenario == "firehose":
        return firehose(n or 1000, frames=args.frames or 10**12, seed=args.seed)
    return recording_quotes(args.file)


async def serve(args: argparse.Namespace) -> None:
    fx = FakeExchange(
        build_scenario(args),
        host=args.host,
        port=args.port,
        interval_s=args.interval,
        wall_clock=args.wall_clock,
        loop=args.loop,
        max_frames=args.frames,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fx:
        what = args.file if args.scenario == "recording" else f"{args.symbols or 'default'} symbols"
        url = f"ws://{fx.host}:{fx.port}"
        print(f"fake exchange listening on {url} (scenario {args.scenario}, {what})", flush=True)
        await stop.wait()
        logger.info("stopping")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
