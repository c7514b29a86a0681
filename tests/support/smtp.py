"""A real SMTP server for the e-mail channel's tests: aiosmtpd on a free port of
127.0.0.1, in a thread of its own (aiosmtpd's ``Controller``), speaking STARTTLS, implicit
TLS or plain SMTP with a certificate from a throwaway CA (``trustme``), optionally
requiring AUTH with ``USER``/``PASSWORD``.

The handler records every message it accepts and can be told what to answer next (a 451
or a 550 instead of accepting), or to answer slowly.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Final, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tools.redis_server import free_port

USER: Final = "alerts@example.org"
PASSWORD: Final = "app-password-0123456789"

Security = Literal["starttls", "tls", "none"]


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    raw: bytes
    authenticated_as: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """aiosmtpd's handler: what arrived, and what to answer instead, in order."""

    mails: list[Mail] = field(default_factory=list)
    replies: deque[str] = field(default_factory=deque)
    delay_s: float = 0.0

    def answer_next(self, *replies: str) -> None:
        """The next DATA commands get these replies (``"451 4.3.0 try later"``)."""
        self.replies.extend(replies)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.replies:
            return self.replies.popleft()
        login = session.auth_data.login.decode() if session.authenticated else None
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos),
                               bytes(envelope.original_content), login))
        return "250 2.0.0 OK queued"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
          and auth_data.password == PASSWORD.encode())
    # handled=False: aiosmtpd answers a failure itself (535).
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass
class SmtpServer:
    security: Security
    ca_file: Path
    port: int
    recorder: Recorder


@contextmanager
def running_smtp(tmp_path: Path, security: Security = "starttls", *,
                 auth: bool = False) -> Iterator[SmtpServer]:
    """An SMTP server on a free port until the block ends; its CA in ``ca_file``."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    tmp_path.mkdir(parents=True, exist_ok=True)
    ca_file = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    recorder = Recorder()
    port = free_port()
    options: dict[str, Any] = {}
    if auth:
        # Over implicit TLS aiosmtpd does not know the connection is encrypted: AUTH is
        # offered without STARTTLS there, and not required (it warns when required so).
        options.update(authenticator=_authenticate, auth_required=security == "starttls",
                       auth_require_tls=security == "starttls")
    if security == "starttls":
        options.update(tls_context=server_context, require_starttls=True)
    controller = Controller(recorder, hostname="127.0.0.1", port=port,
                            ssl_context=server_context if security == "tls" else None,
                            server_hostname="localhost", **options)
    controller.start()
    try:
        yield SmtpServer(security, ca_file, port, recorder)
    finally:
        controller.stop()
