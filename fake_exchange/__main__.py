"""`python -m fake_exchange`: the fake as its own process, for the demo and for end-to-end
tests that run every service as a real process. Faults are injected and the trade market
scripted over HTTP (`/control/...`, see `fake_exchange.control`).

Every scenario but a recording also runs a trade market (`fake_exchange.market`) listing its
symbols: REST `/fapi/v1/exchangeInfo`, `<symbol>@aggTrade`, `!forceOrder@arr` and
`!markPrice@arr@1s` on the same port. The demo adds liquidation cascades and funding
extremes (`fake_exchange.demo_events`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from fake_exchange.demo_board import DEMO_BOARD
from fake_exchange.demo_events import demo_events
from fake_exchange.listings import Listing, listing, synthetic_board
from fake_exchange.market import MAX_TRADES_PER_S, TradeMarket
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
    p.add_argument("--demo", action="store_true",
                   help="the demo: --scenario demo --wall-clock (cascades and funding extremes "
                        "included)")
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
    p.add_argument("--listed", type=int, default=None,
                   help="perpetuals the trade market lists (default: the scenario's symbols; "
                        "0: no trade market)")
    p.add_argument("--no-extras", action="store_true",
                   help="list only trading perpetuals (no quarterly, no contract off trading)")
    p.add_argument("--trades-per-s", type=float, default=None,
                   help="background trades a second over the board (default: one per symbol)")
    p.add_argument("--no-demo-events", action="store_true",
                   help="demo: no liquidation cascades or funding extremes")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.demo:
        args.scenario, args.wall_clock = "demo", True
    if args.scenario == "recording" and not args.file:
        p.error("--scenario recording needs --file")
    if args.interval < 0:
        p.error("--interval must be >= 0")
    if args.scenario == "demo" and args.symbols and not 1 <= args.symbols <= len(DEMO_BOARD):
        p.error(f"--symbols: the demo board has 1 to {len(DEMO_BOARD)} symbols")
    if args.listed is not None and args.listed < 0:
        p.error("--listed must be >= 0")
    if args.trades_per_s is not None and not 0 <= args.trades_per_s <= MAX_TRADES_PER_S:
        p.error(f"--trades-per-s must be 0 to {MAX_TRADES_PER_S}")
    return args


def build_listings(args: argparse.Namespace) -> list[Listing] | None:
    """The trade market's board, or None for no market (a recording, or --listed 0)."""
    if args.scenario == "recording" or args.listed == 0:
        return None
    if args.scenario == "demo":
        n = args.listed or args.symbols or len(DEMO_BOARD)
        board = [listing(name, price) for name, price in DEMO_BOARD[:n]]
        if n > len(DEMO_BOARD):
            board += synthetic_board(n - len(DEMO_BOARD), seed=args.seed, extras=False)
        return board
    default = {"drift": 700, "jump": 700, "firehose": 1000}[args.scenario]
    return synthetic_board(args.listed or args.symbols or default, seed=args.seed,
                           extras=not args.no_extras)


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
    listings = build_listings(args)
    market = None if listings is None else TradeMarket(
        listings, trades_per_s=args.trades_per_s, seed=args.seed)
    fx = FakeExchange(
        build_scenario(args),
        host=args.host,
        port=args.port,
        interval_s=args.interval,
        wall_clock=args.wall_clock,
        loop=args.loop,
        max_frames=args.frames,
        market=market,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fx, asyncio.TaskGroup() as tasks:
        what = args.file if args.scenario == "recording" else f"{args.symbols or 'default'} symbols"
        url = f"ws://{fx.host}:{fx.port}"
        listed = "" if market is None else f", {len(market.board)} listed"
        print(f"fake exchange listening on {url} (scenario {args.scenario}, {what}{listed})",
              flush=True)
        events = None
        if market is not None and args.scenario == "demo" and not args.no_demo_events:
            events = tasks.create_task(demo_events(market, seed=args.seed), name="demo-events")
        await stop.wait()
        logger.info("stopping")
        if events is not None:
            events.cancel()


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
