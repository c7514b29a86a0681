"""``python -m fake_notify --port P``: every fake API on one port until SIGTERM/SIGINT
(the benchmarks run it as a process of its own). ``GET /_fake/received`` lists what
arrived (``?bodies=1`` with each body), ``violations`` the limits broken."""

from __future__ import annotations

import argparse
import asyncio
import signal

from fake_notify.server import running_fake


async def serve(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_fake(port) as fakes:
        print(f"fake notification APIs on {fakes.url}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_notify")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
