"""E-mail over SMTP (``type = "email"``), with ``aiosmtplib``.

One message is a multipart/alternative: a text/plain part and an HTML part (every value
escaped), with the headline as its subject. A digest's subject names how many alerts and
its first few, so the inbox line alone tells what happened. The Message-ID derives from
the alert id (a digest's from all its ids): a re-send after a crash is the same message
to a mail client that deduplicates, and recognisable to a person who looks.

One connection per message: at most one message every 10 s (the budget; providers count
messages per minute and per day, and a phone should not ring for each alert of a burst)
and servers close idle connections after a minute or less, so a kept connection would
mostly be a dead one to detect and replace; a fresh one costs a handshake a few times a
minute at most.

Answers: a 4xx reply, a lost connection or a timeout is transient; a 5xx reply (535 bad
credentials, 550 mailbox unavailable…) is a refusal, with the server's reply as the
detail (it never holds our password; the detail is scrubbed of it all the same).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Final

import aiosmtplib

from common.schemas import Alert
from notifier import alert_text
from notifier.channels import plain
from notifier.channels.base import (
    DIGEST_LISTED,
    Accepted,
    Answer,
    Budget,
    Limit,
    Refused,
    Transient,
    own_limits,
    setting_error,
)
from notifier.config import EmailChannel

log = logging.getLogger(__name__)

LIMITS: Final = (Limit(1, 10.0),)
SUBJECT_LISTED: Final = 3  # alerts named in a digest's subject
_NOT_ATEXT: Final = re.compile(r"[^A-Za-z0-9_-]+")


def subject(prefix: str, alerts: Sequence[Alert]) -> str:
    if len(alerts) == 1:
        text = alert_text.headline(alerts[0])
    else:
        named = ", ".join(alert_text.short_line(a) for a in alerts[:SUBJECT_LISTED])
        more = ", …" if len(alerts) > SUBJECT_LISTED else ""
        text = f"{alert_text.digest_title(alerts)}: {named}{more}"
    return f"{prefix} {text}" if prefix else text


def message_id(alerts: Sequence[Alert], domain: str) -> str:
    """``<alert.SOLUSDT.60.1733…@domain>``: the alert id in the characters a Message-ID
    allows; a digest's is a hash of its ids, as stable."""
    if len(alerts) == 1:
        left = "alert." + _NOT_ATEXT.sub(".", alerts[0].id).strip(".")
    else:
        ids = "\n".join(sorted(a.id for a in alerts)).encode()
        left = "digest." + hashlib.sha256(ids).hexdigest()[:32]
    return f"<{left}@{domain}>"


def html_body(alerts: Sequence[Alert]) -> str:
    esc = html.escape
    if len(alerts) == 1:
        alert = alerts[0]
        url = esc(alert_text.chart_url(alert.symbol))
        rows = "".join(f"<tr><th align=\"left\">{esc(label)}</th><td>{esc(value)}</td></tr>"
                       for label, value in alert_text.facts(alert))
        return (f"<html><body><h2>{esc(alert_text.headline(alert))}</h2>"
                f"<table>{rows}</table>"
                f"<p><a href=\"{url}\">{esc(alert.symbol)} chart on TradingView</a></p>"
                "</body></html>")
    items = "".join(
        f"<li><a href=\"{esc(alert_text.chart_url(a.symbol))}\">"
        f"{esc(alert_text.short_line(a))}</a>{esc(alert_text.window_suffix(a))}</li>"
        for a in alerts[:DIGEST_LISTED])
    rest = alert_text.digest_rest(alerts, DIGEST_LISTED)
    notes = [rest] if rest else []
    notes += alert_text.digest_notes(alerts[:DIGEST_LISTED])
    tail = "".join(f"<p>{esc(note)}</p>" for note in notes)
    return (f"<html><body><h2>{esc(alert_text.digest_title(alerts))}</h2>"
            f"<ul>{items}</ul>{tail}</body></html>")


def build_message(config: EmailChannel, alerts: Sequence[Alert]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(config.subject_prefix, alerts)
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(alerts, sender_domain(config.sender))
    message.set_content(plain.body(alerts, links=True) + "\n")
    message.add_alternative(html_body(alerts), subtype="html")
    return message


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "binance-alerter.invalid"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception it was raised from is a ``kind`` (aiosmtplib
    wraps a failed TLS handshake on connect in SMTPConnectError, not on STARTTLS)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass(eq=False, repr=False)
class Email:
    """One mailbox set on one server; ``repr`` names only the channel (the config holds
    the password)."""

    config: EmailChannel
    port: int
    tls_context: ssl.SSLContext
    timeout_s: float
    budget: Budget
    kind: str = "email"
    human: bool = True

    @property
    def name(self) -> str:
        return self.config.name

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        config = self.config
        try:
            async with asyncio.timeout(self.timeout_s):
                refused, reply = await aiosmtplib.send(
                    build_message(config, alerts), hostname=config.host, port=self.port,
                    username=config.username, password=config.password,
                    use_tls=config.security == "tls",
                    start_tls=config.security == "starttls",
                    tls_context=self.tls_context, timeout=self.timeout_s)
        except TimeoutError:  # aiosmtplib's SMTPTimeoutError is one too
            return Transient("timeout", f"no answer within {self.timeout_s:g} s")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return self._reply(exc.recipients[0].code, exc.recipients[0].message)
        except aiosmtplib.SMTPResponseException as exc:
            return self._reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return self._failure(exc)
        detail = reply
        if refused:
            detail += f" ({len(refused)} of {len(config.to)} recipients refused)"
        return Accepted(250, self._scrub(detail))

    def _failure(self, exc: Exception) -> Answer:
        """No SMTP reply code: a connection that failed, or a server without what the
        config asks for."""
        detail = self._scrub(f"{type(exc).__name__}: {exc}")
        if _caused_by(exc, ssl.SSLCertVerificationError):
            # The certificate does not verify (wrong ca_file, or not this host's): no
            # retry will change that.
            return Refused("tls_verify", detail)
        if isinstance(exc, aiosmtplib.SMTPNotSupported) or (
                isinstance(exc, aiosmtplib.SMTPException) and "not supported" in str(exc)):
            # No STARTTLS or no AUTH where the config needs it (aiosmtplib raises a plain
            # SMTPException for those): a setting to change.
            return Refused("smtp_not_supported", detail)
        return Transient("connect", detail)

    def _reply(self, code: int, text: str) -> Answer:
        detail = self._scrub(f"{code} {text}")
        return Refused(f"smtp_{code}", detail) if code >= 500 else Transient(f"smtp_{code}",
                                                                              detail)

    def _scrub(self, text: str) -> str:
        password = self.config.password
        if password:
            text = text.replace(password, "***")
        return text[:300]

    async def aclose(self) -> None:
        """Nothing is kept open between messages."""

    def __repr__(self) -> str:
        return f"Email(name={self.name!r})"


def create(config: EmailChannel, *, timeout_s: float) -> Email:
    if not config.host:
        raise setting_error(config.name, "host", "must name the SMTP server")
    if not config.to or not all("@" in parseaddr(to)[1] for to in config.to):
        raise setting_error(config.name, "to", "must list one or more e-mail addresses")
    if "@" not in parseaddr(config.sender)[1]:
        raise setting_error(config.name, "from", "must be an e-mail address")
    if (config.username is None) != (config.password is None):
        field = "password" if config.password is None else "username"
        raise setting_error(config.name, field, "username and password go together")
    if config.password is not None and config.security == "none":
        raise setting_error(config.name, "security",
                            "a password is only sent over TLS (starttls or tls)")
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise setting_error(config.name, "ca_file",
                            f"cannot be read as a PEM CA bundle ({type(exc).__name__})"
                            ) from None
    port = config.port or (465 if config.security == "tls" else 587)
    log.debug("e-mail channel %s ready", config.name)
    return Email(config, port, context, timeout_s,
                 Budget(own_limits(LIMITS, config.max_per_minute)))
