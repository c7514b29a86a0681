"""Apprise (``type = "apprise"``): one URL reaches any of the hundred services Apprise
knows (``tgram://``, ``mailto://``, ``pover://``, ``json://`` …) for those this project
has no channel of its own for.

Apprise is an optional extra (``pip install "binance-alerter[apprise]"``), imported when
such a channel is built. The URL is checked then: one Apprise cannot load is a setting
error, named without quoting the URL (it carries the service's secret).

Apprise answers only "sent" or "not sent", not why nor when to come back: not sent is
transient (retried with backoff until the dispatcher's deadline), never a refusal, and a
call over ``timeout_s`` is a timeout. Apprise's HTTP calls block, so it runs them in
threads; a call given up for its timeout ends in its thread in the background, bounded by
the plugin's own socket timeouts. Pacing: 1 message per 2 s, a rate every service behind
it tolerates. Apprise's own log lines are kept out of the service's logs (one quotes a URL
it could not parse as it is).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from common.schemas import Alert
from notifier.channels import plain
from notifier.channels.base import (
    Accepted,
    Answer,
    Budget,
    Limit,
    Transient,
    own_limits,
    setting_error,
)
from notifier.config import AppriseChannel

if TYPE_CHECKING:
    import apprise

log = logging.getLogger(__name__)

LIMITS: Final = (Limit(1, 2.0),)


@dataclass(eq=False, repr=False)
class Apprise:
    """One Apprise URL; ``repr`` names only the channel (the URL is a secret)."""

    config: AppriseChannel
    notifier: apprise.Apprise
    timeout_s: float
    budget: Budget
    kind: str = "apprise"
    human: bool = True

    @property
    def name(self) -> str:
        return self.config.name

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        try:
            async with asyncio.timeout(self.timeout_s):
                # body_format "text": a service whose messages are HTML or Markdown
                # gets the text escaped for it by Apprise.
                result: Any = await self.notifier.async_notify(
                    title=plain.title(alerts), body=plain.body(alerts, links=True),
                    body_format="text")
        except TimeoutError:
            return Transient("timeout", f"no answer within {self.timeout_s:g} s")
        if result:
            return Accepted(200, "sent")
        status = getattr(getattr(result, "status", None), "name", "")
        if status == "TIMEOUT":  # Apprise ≥ 2 tells a timeout apart
            return Transient("timeout", "apprise timed out")
        return Transient("apprise_failed", "apprise reported the message as not sent")

    async def aclose(self) -> None:
        """Apprise keeps no connection between calls."""

    def __repr__(self) -> str:
        return f"Apprise(name={self.name!r})"


def _quiet(library_log: logging.Logger) -> None:
    """Apprise's own log lines stay out of the service's: one about a URL it cannot parse
    quotes the URL, secret and all. (A NullHandler, or Python's last-resort handler would
    print them to stderr.)"""
    library_log.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in library_log.handlers):
        library_log.addHandler(logging.NullHandler())


def create(config: AppriseChannel, *, timeout_s: float) -> Apprise:
    try:
        import apprise
    except ImportError:
        raise setting_error(config.name, "type",
                            'apprise channels need Apprise: pip install '
                            '"binance-alerter[apprise]"') from None
    _quiet(logging.getLogger("apprise"))
    notifier = apprise.Apprise()
    if not config.url or not notifier.add(config.url) or len(notifier) == 0:
        raise setting_error(config.name, "url",
                            "is not a URL Apprise can use (see its wiki for the form of "
                            "each service's URL)")
    log.debug("apprise channel %s ready", config.name)
    return Apprise(config, notifier, timeout_s, Budget(own_limits(LIMITS, config.max_per_minute)))
