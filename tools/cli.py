"""The ``binance-alerter`` console script: operator commands next to ``python -m <service>``.

Arguments are checked here, before any work starts, so that a typo exits with code 2 and
a message naming the option, as argparse does for its own errors.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from common.logs import configure_logging
from common.rule_model import Rule
from common.settings import check_websocket_url
from detector.rules import RulesFileError, load_rules_file
from tools.backtest import BacktestOptions, run_backtest
from tools.backtest_feeds import FEEDS
from tools.backtest_report import FORMATS
from tools.launcher import UpOptions, run_up
from tools.recorder import RecordOptions, run_record
from tools.replayer import ReplayOptions, run_replay


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binance-alerter",
        description="Real-time price-move alerts for Binance USDⓈ-M perpetual futures.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="run a local bus and the three services",
        description="Run a local Redis-compatible server (or, with --bus kafka, an in-memory "
                    "Kafka-protocol broker) and the ingestor, detector and gateway as "
                    "separate processes. Settings come from the environment.")
    up.add_argument("--host", default="127.0.0.1",
                    help="gateway bind address (default 127.0.0.1; 0.0.0.0 to share)")
    up.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    up.add_argument("--bus", choices=("redis", "kafka"), default="redis",
                    help="transport of the started bus (default redis; kafka starts tansu)")
    up.add_argument("--bus-url",
                    help="use this running bus (redis://… or kafka://host:port) instead of "
                         "starting one")
    up.add_argument("--redis-port", type=int, help="port for the started Redis (default free)")
    up.add_argument("--kafka-port", type=int,
                    help="port for the started Kafka broker (default free)")
    up.add_argument("--data-dir", type=Path,
                    help="keep Redis data here across runs (default: a temporary directory)")
    source = up.add_mutually_exclusive_group()
    source.add_argument("--binance-url", help="exchange WebSocket URL (a fake or replay server)")
    source.add_argument("--demo", action="store_true",
                        help="start the fake exchange with a lively scenario (no internet)")
    up.add_argument("--notify", type=_existing_file, metavar="FILE",
                    help="run the notifier too, with this NOTIFY_CONFIG file (channels and "
                         "routes, README \"Notifications\")")
    up.set_defaults(run=_run_up)
    _add_notify_test(commands)
    _add_record(commands)
    _add_replay(commands)
    _add_backtest(commands)
    return parser


def _number(text: str, *, minimum: float, inclusive: bool, kind: type[float] | type[int]
            ) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{'an integer' if kind is int else 'a number'} is needed, not {text!r}") from None
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise argparse.ArgumentTypeError(f"must be {bound}, not {text!r}")
    return value


def _positive(text: str) -> float:
    return _number(text, minimum=0, inclusive=False, kind=float)


def _non_negative(text: str) -> float:
    return _number(text, minimum=0, inclusive=True, kind=float)


def _positive_int(text: str) -> int:
    return int(_number(text, minimum=1, inclusive=True, kind=int))


def _non_negative_int(text: str) -> int:
    return int(_number(text, minimum=0, inclusive=True, kind=int))


def _port(text: str) -> int:
    port = _non_negative_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, not {text!r}")
    return port


def _existing_file(text: str) -> str:
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"a folder, not a file: {text!r}")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def _websocket_url(text: str) -> str:
    """Checked here, so that the error names the argument, not the setting it overrides."""
    try:
        return check_websocket_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, not {text!r}") from None


def _add_notify_test(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    notify_test = commands.add_parser(
        "notify-test", help="send a test alert through one notification channel",
        description="Load the notifier's configuration, send one made-up alert (BTCUSDT, "
                    "rule notify-test) through the channel named CHANNEL and print the "
                    "API's answer. Exit 0 when the API accepted it, 1 when it did not, 2 "
                    "for a configuration error or an unknown channel.")
    notify_test.add_argument("channel", metavar="CHANNEL", help="a [[channel]]'s name")
    notify_test.add_argument("--config", metavar="FILE",
                             help="the NOTIFY_CONFIG file (default: $NOTIFY_CONFIG)")
    notify_test.add_argument("--timeout", type=_positive, default=10.0, metavar="S",
                             help="how long the request may take (default 10)")
    notify_test.set_defaults(run=_run_notify_test)


def _add_record(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    record = commands.add_parser(
        "record", help="record an exchange feed's raw frames to compressed files",
        description="Connect like the ingestor (reconnects, stale-data watchdog) and write "
                    "every frame with its receive time to gzip JSON lines "
                    "PREFIX-<UTC time>.jsonl.gz, rotating by size or age. Ctrl-C stops "
                    "cleanly; a killed recorder loses at most the last second.")
    record.add_argument("url", metavar="URL", type=_websocket_url,
                        help="feed, e.g. wss://fstream.binance.com/market/stream?streams="
                             "!miniTicker@arr")
    record.add_argument("-o", "--output", default="binance", metavar="PREFIX",
                        help="file name prefix, may include a directory (default: binance)")
    record.add_argument("--rotate-mb", type=_positive, default=100.0, metavar="MB",
                        help="start a new file past this size on disk (default 100)")
    record.add_argument("--rotate-minutes", type=_positive, default=60.0, metavar="MIN",
                        help="start a new file after this long (default 60)")
    record.set_defaults(run=_run_record)


def _add_replay(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay", help="serve recordings as a Binance-compatible WebSocket server",
        description="Serve recordings (ours, hftbacktest, cryptofeed) on /market/stream?"
                    "streams=... (combined) and /market/ws/<stream> (raw), frames as recorded "
                    "whatever the streams asked for, at the recorded pace or faster. Prints "
                    "'replay listening on ws://HOST:PORT' once ready; point "
                    "'binance-alerter up --binance-url' at it.")
    replay.add_argument("files", nargs="+", type=_existing_file, metavar="FILE",
                        help="recordings, played one after the other")
    replay.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    replay.add_argument("--port", type=_port, default=9443,
                        help="port (default 9443; 0 picks a free one)")
    replay.add_argument("--speed", type=_non_negative, default=1.0, metavar="N",
                        help="N times the recorded pace (default 1; 0: as fast as clients read)")
    replay.add_argument("--loop", action="store_true",
                        help="start over at the end, event times shifted forward")
    replay.set_defaults(run=_run_replay)


def _add_backtest(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backtest = commands.add_parser(
        "backtest", help="run the detection rule over recordings and print its alerts",
        description="Feed recordings (ours, hftbacktest, cryptofeed; several are read in the "
                    "order given) through the ingestor's parser and the detector's engine, "
                    "print the alerts, then a summary per symbol and per hour (on stderr "
                    "for jsonl and csv, so stdout stays machine-readable).")
    backtest.add_argument("files", nargs="+", type=_existing_file, metavar="FILE",
                          help="recordings: ours (record), hftbacktest or cryptofeed")
    backtest.add_argument("--window", type=_positive_int, metavar="S",
                          help="window in seconds (default 60)")
    backtest.add_argument("--up", type=_positive, metavar="PCT",
                          help="rise that fires, in percent (default 2)")
    backtest.add_argument("--down", type=_positive, metavar="PCT",
                          help="fall that fires, in percent (default 2)")
    backtest.add_argument("--cooldown", type=_non_negative_int, metavar="S",
                          help="quiet time per symbol after an alert (default: the window)")
    backtest.add_argument("--rules", type=_existing_file, metavar="FILE",
                          help='rules file {"rules": [...]} (the admin API\'s document: several '
                               "named rules, overrides, escalation…) instead of the options "
                               "above")
    backtest.add_argument("--feed", choices=FEEDS, default="agg_trade",
                          help="what the engine sees of a trade recording: every trade "
                               "(agg_trade, default, as FEED=agg_trade) or the last trade "
                               "price of each second (mini_ticker, what the mini ticker "
                               "would have shown)")
    backtest.add_argument("--format", choices=FORMATS, default="table",
                          help="table (default), jsonl (one Alert per line) or csv")
    backtest.add_argument("--no-summary", dest="summary", action="store_false",
                          help="print the alerts only")
    progress = backtest.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None,
                          help="always show a progress bar on stderr (default: on a "
                               "terminal, for inputs over 20 MB)")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="never show it")
    # Its own parser, so that an error found after parsing shows backtest's usage.
    backtest.set_defaults(run=functools.partial(_run_backtest, backtest))


def _backtest_rules(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Rule]:
    given = [f"--{name}" for name in ("window", "up", "down", "cooldown")
             if getattr(args, name) is not None]
    if args.rules is not None:
        if given:
            parser.error(f"--rules replaces {', '.join(given)}; give one or the other")
        try:
            return load_rules_file(args.rules)
        except RulesFileError as exc:
            parser.error(f"argument --rules: {exc}")
    window = 60 if args.window is None else args.window
    try:
        return [Rule(window_s=window,
                     threshold_up_pct=2.0 if args.up is None else args.up,
                     threshold_down_pct=2.0 if args.down is None else args.down,
                     cooldown_s=window if args.cooldown is None else args.cooldown)]
    except ValueError as exc:
        parser.error(str(exc))


def _run_backtest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:  # embedded callers (tests) keep their own logging
        configure_logging("WARNING", service="backtest")
    options = BacktestOptions(paths=args.files, rules=_backtest_rules(parser, args),
                              output_format=args.format, summary=args.summary,
                              progress=args.progress, feed=args.feed)
    try:
        return run_backtest(options)
    except BrokenPipeError:
        # `backtest ... | head`: the reader left; say nothing more and exit as a shell would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _run_up(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        print("binance-alerter up: --port must be 1..65535", file=sys.stderr)
        return 2
    return run_up(UpOptions(host=args.host, port=args.port, bus_url=args.bus_url,
                            bus=args.bus, redis_port=args.redis_port,
                            kafka_port=args.kafka_port, data_dir=args.data_dir,
                            binance_url=args.binance_url, demo=args.demo,
                            notify_config=args.notify))


def _run_notify_test(args: argparse.Namespace) -> int:
    config_path = args.config or os.environ.get("NOTIFY_CONFIG", "")
    if not config_path:
        print("binance-alerter notify-test: no configuration: give --config FILE or set "
              "NOTIFY_CONFIG", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        configure_logging("WARNING", service="notify-test")
    try:  # the channels need the notify extra; the other commands do not
        from tools.notify_test import NotifyTestOptions, run_notify_test
    except ModuleNotFoundError as exc:
        if exc.name not in {"httpx", "aiosmtplib"}:
            raise
        print(f"binance-alerter notify-test: {exc.name} is missing: "
              "pip install 'binance-alerter[notify]'", file=sys.stderr)
        return 2
    options = NotifyTestOptions(channel=args.channel, config_path=config_path,
                                environ=dict(os.environ), timeout_s=args.timeout)
    return run_notify_test(options, sys.stdout, sys.stderr)


def _run_record(args: argparse.Namespace) -> int:
    return run_record(RecordOptions(url=args.url, prefix=args.output, rotate_mb=args.rotate_mb,
                                    rotate_minutes=args.rotate_minutes))


def _run_replay(args: argparse.Namespace) -> int:
    return run_replay(ReplayOptions(paths=args.files, host=args.host, port=args.port,
                                    speed=args.speed, loop=args.loop))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run  # set by each command's parser
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
