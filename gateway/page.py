"""The page's files, served with the headers that keep the page to itself.

The Content-Security-Policy allows the page's own scripts, styles and connections (``'self'``
covers the ``ws:``/``wss:`` socket to the same host and port) and, as frames, only
TradingView's widget page, which the chart panel embeds. No inline script, no inline style
sheet, no third-party script: an injected ``<script>`` or a frame of any other origin is
refused by the browser and reported as a violation.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import Response
from starlette.staticfiles import StaticFiles

# The chart panel's iframe (frontend/chart-panel.js); what that frame loads is TradingView's
# own business, governed by its own policy, not this one.
TRADINGVIEW_FRAMES: Final = "https://s.tradingview.com"

CONTENT_SECURITY_POLICY: Final = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    f"frame-src {TRADINGVIEW_FRAMES}",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'self'",
))

PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
}


class PageFiles(StaticFiles):
    """``frontend/``, every file with ``PAGE_HEADERS`` (304s included)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
        return response
