"""Which browser origins may open ``/ws``: the cross-site WebSocket hijacking defence.

A browser always sends ``Origin`` with a WebSocket handshake, and a page cannot forge it.
It can forge the meaning of ``Host``, though: a DNS-rebinding page at
``http://evil.example:8080`` whose name now resolves to the gateway sends ``Host:
evil.example:8080`` and ``Origin: http://evil.example:8080``, so "Origin equals Host" is no
proof of anything. Trusted instead, and only these:

- the origins the page is served at by this gateway itself, known without believing a
  header: ``http://localhost``, ``http://127.0.0.1`` and ``http://[::1]`` on the port, the
  ``GATEWAY_HOST`` the gateway is bound to when it names one, and the address the client
  connected to (an IP literal, which no rebinding page can have as its origin);
- the origins in ``ALLOWED_ORIGINS``: where the page is published under a name (a LAN name,
  a reverse proxy's ``https://alerts.example.com``, a mapped port), or ``*``.

Clients without ``Origin`` (not browsers) are no CSWSH vector and pass.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from common.settings import GatewaySettings

LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "[::1]")
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    allowed: frozenset[str]  # ALLOWED_ORIGINS, normalized
    bound_host: str  # GATEWAY_HOST when it names one address or name, else ""

    @classmethod
    def of(cls, settings: GatewaySettings) -> OriginPolicy:
        host = settings.gateway_host.strip().lower()
        return cls(frozenset(o.lower() for o in settings.origins),
                   "" if host in _WILDCARD_HOSTS else _url_host(host))

    def allows(self, origin: str | None, local: tuple[str, int] | None) -> bool:
        """``local``: the (address, port) this connection reached, from the ASGI scope."""
        if origin is None or "*" in self.allowed:
            return True
        origin = origin.strip().rstrip("/").lower()
        return origin in self.allowed or origin in self.served(local)

    def served(self, local: tuple[str, int] | None) -> frozenset[str]:
        """The page's own origins for a connection that reached ``local``."""
        if local is None:
            return frozenset()
        address, port = local[0], local[1]
        hosts = {*LOOPBACK_NAMES, _url_host(address)}
        if self.bound_host:
            hosts.add(self.bound_host)
        origins = {f"http://{host}:{port}" for host in hosts}
        if port == 80:  # a browser leaves the default port out
            origins |= {f"http://{host}" for host in hosts}
        return frozenset(origins)


def _url_host(host: str) -> str:
    """``host`` as it appears in a URL (IPv6 literals in brackets)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # a dual-stack socket's view of an IPv4 client
    return f"[{address}]" if address.version == 6 else str(address)
