"""Plain-text bodies, for the channels without markup of their own (ntfy, the text part of
an e-mail, Apprise, which passes the text on to whatever service its URL names).

Only layout: the words are ``notifier.alert_text``'s. A digest lists its first
``DIGEST_LISTED`` alerts (the caller's order: most significant first) and counts the rest,
so its size is bounded whatever the burst.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.schemas import Alert
from notifier import alert_text
from notifier.channels.base import DIGEST_LISTED


def single_body(alert: Alert) -> str:
    """The facts of one alert, one per line, then its chart."""
    lines = [f"{label}: {value}" for label, value in alert_text.facts(alert)]
    lines.append(f"Chart: {alert_text.chart_url(alert.symbol)}")
    return "\n".join(lines)


def digest_lines(alerts: Sequence[Alert], *, links: bool) -> list[str]:
    """``▲ SOLUSDT +3.10 % · 60 s`` for each listed alert (with ``links``, followed by its
    chart), then ``… and N more`` when there are more, then the digest's notes (the
    liquidation caveat)."""
    lines = []
    listed = alerts[:DIGEST_LISTED]
    for alert in listed:
        line = alert_text.listing(alert)
        lines.append(f"{line} {alert_text.chart_url(alert.symbol)}" if links else line)
    rest = alert_text.digest_rest(alerts, DIGEST_LISTED)
    if rest is not None:
        lines.append(rest)
    return lines + alert_text.digest_notes(listed)


def digest_body(alerts: Sequence[Alert], *, links: bool) -> str:
    return "\n".join(digest_lines(alerts, links=links))


def title(alerts: Sequence[Alert]) -> str:
    """The headline of one alert, or ``14 alerts in 6 s`` for a digest."""
    return (alert_text.headline(alerts[0]) if len(alerts) == 1
            else alert_text.digest_title(alerts))


def body(alerts: Sequence[Alert], *, links: bool = True) -> str:
    return single_body(alerts[0]) if len(alerts) == 1 else digest_body(alerts, links=links)
