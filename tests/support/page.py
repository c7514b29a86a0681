"""The page tests' instruments: an instrumented page in the system Chromium, and alerts.

The page is observed from outside, never through hooks of its own: an init script counts
the oscillators the page creates (the chime) and stamps the moment each alert row enters
the DOM; Playwright events record console errors, requests and WebSocket URLs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Browser, BrowserContext, Page, expect

from common.schemas import Alert, alert_id

ARTIFACTS: Final = Path(__file__).resolve().parents[1] / "artifacts"
LOCAL_HOSTS: Final = {"127.0.0.1", "localhost", "::1", "[::1]"}
ROWS: Final = "#alert-rows tr"

# Runs before any script of the page, in every frame and after every reload.
INSTRUMENT_JS: Final = """
(() => {
  const probe = window.__probe = { oscillators: 0, rowsSeenAt: {}, notifications: [],
                                   permissionRequests: 0, cspViolations: [] };
  document.addEventListener("securitypolicyviolation", (event) => {
    probe.cspViolations.push({ directive: event.effectiveDirective,
                               blocked: event.blockedURI });
  });
  const Context = window.AudioContext;
  if (Context) {
    const create = Context.prototype.createOscillator;
    Context.prototype.createOscillator = function (...args) {
      probe.oscillators += 1;
      return create.apply(this, args);
    };
  }
  new MutationObserver((records) => {
    const now = Date.now();
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeName === "TR" && node.dataset && node.dataset.id
            && !(node.dataset.id in probe.rowsSeenAt)) {
          probe.rowsSeenAt[node.dataset.id] = now;
        }
      }
    }
  }).observe(document, { childList: true, subtree: true });
})();
"""

# A recording Notification API, permission "default" until the page asks.
FAKE_NOTIFICATIONS_JS: Final = """
(() => {
  let permission = "default";
  class FakeNotification {
    constructor(title, options) {
      window.__probe.notifications.push({ title, body: (options || {}).body || "" });
    }
    addEventListener() {}
    close() {}
    static get permission() { return permission; }
    static async requestPermission() {
      window.__probe.permissionRequests += 1;
      permission = "granted";
      return permission;
    }
  }
  window.Notification = FakeNotification;
  // The page is "in the background" for the notifier.
  document.hasFocus = () => false;
})();
"""


@dataclass
class PageProbe:
    """One instrumented page and what it did."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)

    def attach(self) -> None:
        self.page.on("console", lambda m: self.console_errors.append(m.text)
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", lambda ws: self.websockets.append(ws.url))

    def foreign_requests(self) -> list[str]:
        """Every request whose host is not this machine (data: URLs have no host)."""
        foreign = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme == "data":
                continue
            if parts.hostname not in LOCAL_HOSTS:
                foreign.append(url)
        return foreign

    def since_values(self) -> list[str | None]:
        """The ``since`` of each WebSocket the page opened, in order (None: no since)."""
        return [parse_qs(urlsplit(url).query).get("since", [None])[0]
                for url in self.websockets]

    async def oscillators(self) -> int:
        return int(await self.page.evaluate("window.__probe.oscillators"))

    async def row_ids(self) -> list[str]:
        ids: list[str] = await self.page.locator("#alert-rows tr").evaluate_all(
            "rows => rows.map(r => r.dataset.id)")
        return ids

    async def visible_symbols(self) -> list[str]:
        symbols: list[str] = await self.page.locator("#alert-rows tr").evaluate_all(
            "rows => rows.filter(r => !r.hidden).map(r => r.dataset.symbol)")
        return symbols

    async def csp_violations(self) -> list[dict[str, str]]:
        """What the page's Content-Security-Policy refused (securitypolicyviolation events)."""
        violations: list[dict[str, str]] = await self.page.evaluate(
            "window.__probe.cspViolations")
        return violations

    async def seen_at_ms(self, alert_id: str) -> float:
        value = await self.page.evaluate("id => window.__probe.rowsSeenAt[id]", alert_id)
        assert value is not None, f"row {alert_id} never appeared"
        return float(value)


async def open_probe(context: BrowserContext, url: str) -> PageProbe:
    page = await context.new_page()
    probe = PageProbe(page)
    probe.attach()
    await page.goto(url)
    return probe


async def new_context(browser: Browser, **options: Any) -> BrowserContext:
    context = await browser.new_context(**options)
    await context.add_init_script(INSTRUMENT_JS)
    return context


async def wait_until(predicate: Callable[[], object], what: str,
                     timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def live_alert(symbol: str, change_pct: float, *, ago_s: float = 0.0, window_s: int = 60,
               base_price: float = 100.0, points: int = 40, event_time_ms: int | None = None,
               rule: str | None = None) -> Alert:
    """An alert as the detector writes it, with a plausible path: flat, then the move."""
    event_time = event_time_ms if event_time_ms is not None else now_ms() - int(ago_s * 1000)
    price = base_price * (1 + change_pct / 100)
    path: list[tuple[int, float]] = []
    step_ms = window_s * 1000 // max(points - 1, 1)
    for i in range(points):
        share = i / max(points - 1, 1)
        ramp = max(0.0, (share - 0.55) / 0.45) ** 1.6
        wiggle = 0.0006 * math.sin(i * 1.7) * base_price
        point_price = price if i == points - 1 else (
            base_price + (price - base_price) * ramp + wiggle)
        path.append((event_time - (points - 1 - i) * step_ms, point_price))
    return Alert(id=alert_id(symbol, window_s, event_time), symbol=symbol,
                 direction="up" if change_pct >= 0 else "down", change_pct=change_pct,
                 price=price, base_price=base_price, window_s=window_s, threshold_pct=2.0,
                 event_time_ms=event_time, detected_at_ms=event_time + 4,
                 source="mini_ticker", path=path if points >= 2 else None, rule=rule)


def alert_document(alert: Alert) -> dict[str, Any]:
    """The alert as the gateway sends it to browsers (JSON object)."""
    return {
        "id": alert.id, "symbol": alert.symbol, "direction": alert.direction,
        "change_pct": alert.change_pct, "price": alert.price, "base_price": alert.base_price,
        "window_s": alert.window_s, "threshold_pct": alert.threshold_pct,
        "event_time_ms": alert.event_time_ms, "detected_at_ms": alert.detected_at_ms,
        "source": alert.source,
        "path": [list(point) for point in alert.path] if alert.path is not None else None,
        "rule": alert.rule, "level": alert.level,
    }


async def row_count_is(page: Page, count: int) -> None:
    await expect(page.locator(ROWS)).to_have_count(count)
