"""The message bus: the contract every service codes against and the backends behind it.

Services import from here only (``from common.bus import Record, Transport, ...``); a
backend module is loaded by the registry when ``BUS_URL`` names its scheme, so an optional
backend's dependencies are needed only when it is chosen. ``create_transport(settings)``
is the one way to get a transport: each backend builds its own typed config from the
service settings there, at start. See docs/architecture.md.
"""

from common.bus.contract import (
    BroadcastReader,
    BusUnavailable,
    ConsumerLag,
    Delivery,
    GroupConsumer,
    OwnershipLost,
    Record,
    Retention,
    Sharing,
    Transport,
    TransportConfigError,
)
from common.bus.registry import create_transport, register_transport, schemes

__all__ = [
    "BroadcastReader",
    "BusUnavailable",
    "ConsumerLag",
    "Delivery",
    "GroupConsumer",
    "OwnershipLost",
    "Record",
    "Retention",
    "Sharing",
    "Transport",
    "TransportConfigError",
    "create_transport",
    "register_transport",
    "schemes",
]
