"""One scenario frame rendered for every streaming client: each stream shape once, each
combined wrapper once, whatever the number of clients."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from fake_exchange.frames import Renderer, StreamSpec, combined, restamp

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from fake_exchange.clients import Client
    from fake_exchange.scenarios import Quote

logger = logging.getLogger(__name__)


def render_frame(
    clients: Iterable[Client],
    renderer: Renderer,
    frame: Sequence[Quote],
    *,
    wall_clock: bool,
    skip: Callable[[StreamSpec], bool],
) -> list[tuple[Client, bytes]]:
    """The messages of `frame`, per client; specs for which `skip` is true are another
    source's (the trade market's) and get nothing here. Call after `renderer.apply(frame)`."""
    rendered_ms = time.time_ns() // 1_000_000 if wall_clock else None
    payloads: dict[StreamSpec, bytes | None] = {}
    messages: dict[tuple[str, bool], bytes | None] = {}
    outbox: list[tuple[Client, tuple[str, bool]]] = []
    for client in clients:
        if not client.streaming:
            continue
        is_combined = client.route.combined
        for stream, spec in list(client.subs.items()):
            if spec is None or skip(spec):
                continue
            key = (stream, is_combined)
            if key not in messages:
                if spec not in payloads:
                    payloads[spec] = renderer.payload(spec, frame, rendered_ms)
                p = payloads[spec]
                messages[key] = None if p is None else combined(stream, p) if is_combined else p
            if messages[key] is not None:
                outbox.append((client, key))
    if rendered_ms is not None:
        # The exchange stamps E as it sends; rendering a large frame here takes
        # milliseconds that a real exchange does not spend, so they are left out.
        sent_ms = time.time_ns() // 1_000_000
        if sent_ms != rendered_ms:
            messages = {key: None if m is None else restamp(m, rendered_ms, sent_ms)
                        for key, m in messages.items()}
    out: list[tuple[Client, bytes]] = []
    for client, key in outbox:
        msg = messages[key]
        assert msg is not None
        out.append((client, msg))
    return out
