"""The PROXY protocol as a listener's preamble: which peers may send a header, and what to do
with it.

gev-core runs a listener's *preamble* before anything else of a connection (before TLS, before
protocol selection, before ``on_connect``): it hands the connection's first bytes to the
preamble object until that says how many of them it consumed. :class:`ProxyProtocol` is such an
object: a :class:`gev_core.Preamble`, installed with :meth:`gev_core.Server.set_preamble`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from gev_core import PreambleConnection

from ._errors import ProxyProtocolError
from ._header import V1_MAX_LENGTH, Address, ProxyHeader
from ._parse import DEFAULT_MAX_SIZE, MAX_SIZE_LIMIT, MIN_MAX_SIZE, parse_header

__all__ = [
    "DEFAULT_TIMEOUT",
    "HEADER_KEY",
    "POLICIES",
    "ProxyProtocol",
    "TrustedNetworks",
    "proxy_header",
]

logger = logging.getLogger("gev.proxy_protocol")

#: Seconds a connection gets to deliver its header (the spec asks for at least 3, to cover a TCP
#: retransmit).
DEFAULT_TIMEOUT = 10.0
#: ``"required"``: every connection must come from a trusted network and start with a header.
#: ``"optional"``: connections from trusted networks must start with a header; others are
#: served as direct clients, their bytes never inspected for one.
POLICIES = ("required", "optional")
#: The key under which a connection keeps its :class:`ProxyHeader` (``conn.get(HEADER_KEY)``).
HEADER_KEY = "gev_proxy_protocol.header"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_header(conn: Any) -> ProxyHeader | None:
    """The PROXY protocol header ``conn`` arrived with, or ``None`` (a direct client).

    Read the v2 TLVs from it: ``proxy_header(conn).authority``, ``.alpn``, ``.unique_id``,
    ``.ssl``; ``.destination`` is the address the client connected to.
    """
    header = conn.get(HEADER_KEY)
    return header if isinstance(header, ProxyHeader) else None


class TrustedNetworks:
    """The networks whose peers may send a PROXY protocol header.

    :param networks: CIDR strings (``"10.0.0.0/8"``, ``"::1/128"``; a bare address is one
        host), ``ipaddress`` networks, or ``None`` to trust every peer. Unix-socket peers are
        always trusted: whoever can connect to the socket file is local and passed its
        permissions.
    :raises ValueError: a string that is not a network.
    """

    def __init__(self, networks: Iterable[str | Network] | None = None) -> None:
        self.any = networks is None
        parsed: list[Network] = []
        for net in networks or ():
            if isinstance(net, str):
                try:
                    net = ipaddress.ip_network(net.strip(), strict=False)
                except ValueError as exc:
                    raise ValueError(f"not a trusted network (CIDR): {net!r}: {exc}") from None
            parsed.append(net)
        self.networks: tuple[Network, ...] = tuple(parsed)

    def __contains__(self, address: Any) -> bool:
        """Is ``address`` (what ``accept()`` returns, or an IP string) in a trusted network?"""
        if self.any:
            return True
        if not isinstance(address, tuple):
            # accept() gives tuples for IP peers; a string (or bytes) is a Unix socket peer,
            # unless it is an IP address written out.
            if not isinstance(address, str):
                return True
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return True
        else:
            try:
                ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
            except ValueError:
                return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener's IPv4 peer
        return any(ip in net for net in self.networks)

    def __repr__(self) -> str:
        if self.any:
            return "TrustedNetworks(any)"
        return f"TrustedNetworks({', '.join(map(str, self.networks))})"

    def describe(self) -> str:
        """The networks as a comma list, for messages."""
        return "any" if self.any else ", ".join(map(str, self.networks)) or "none"


class ProxyProtocol:
    """The PROXY protocol (v1 and v2) as a listener's preamble (a :class:`gev_core.Preamble`).

    :param trusted: networks allowed to send a header (see :class:`TrustedNetworks`); ``None``
        trusts every peer, as HAProxy's ``accept-proxy`` and nginx's ``proxy_protocol`` do --
        then only your firewall keeps clients from claiming any address.
    :param policy: ``"required"`` (default): every connection must come from a trusted network
        and start with a header; ``"optional"``: connections from trusted networks must start
        with a header, the others are served as they are (their own address, their bytes never
        inspected for a header -- the spec forbids guessing).
    :param versions: the versions accepted, ``(1, 2)`` by default.
    :param max_size: the largest v2 header accepted, in bytes.
    :param timeout: seconds a connection gets to deliver its header; ``None``: no limit.

    On a connection's header the preamble sets the connection's peer to the header's source
    (unless it is a ``LOCAL`` or ``UNKNOWN`` one, which keep the real endpoints) and keeps the
    header: :func:`proxy_header` returns it.
    """

    name = "proxy-protocol"

    def __init__(
        self,
        *,
        trusted: Iterable[str | Network] | TrustedNetworks | None = None,
        policy: str = "required",
        versions: Iterable[int] = (1, 2),
        max_size: int = DEFAULT_MAX_SIZE,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        chosen = frozenset(versions)
        if not chosen or not chosen <= {1, 2}:
            raise ValueError(f"versions must be 1, 2 or both, not {sorted(chosen)}")
        if not MIN_MAX_SIZE <= max_size <= MAX_SIZE_LIMIT:
            raise ValueError(f"max_size must be between {MIN_MAX_SIZE} and {MAX_SIZE_LIMIT}")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0 seconds (or None)")
        self.trusted = trusted if isinstance(trusted, TrustedNetworks) else TrustedNetworks(trusted)
        self.policy = policy
        self.versions = tuple(sorted(chosen))
        self.header_max_size = max_size
        #: What the core may buffer: the longest header accepted.
        self.max_size = max(max_size if 2 in chosen else 0, V1_MAX_LENGTH if 1 in chosen else 0)
        self.timeout = timeout

    def __repr__(self) -> str:
        return (
            f"ProxyProtocol(policy={self.policy!r}, trusted={self.trusted.describe()!r},"
            f" versions={self.versions}, max_size={self.header_max_size}, timeout={self.timeout})"
        )

    def start(self, conn: PreambleConnection) -> bool:
        peer = conn.remote_address
        if peer in self.trusted:
            return True
        if self.policy == "optional":
            return False
        raise ProxyProtocolError(
            f"peer {_show(peer)} is not in the trusted proxy networks"
            f" ({self.trusted.describe()}); refusing its PROXY protocol connection"
        )

    def feed(self, conn: PreambleConnection, data: bytes | memoryview) -> int | None:
        header = parse_header(data, max_size=self.header_max_size, versions=self.versions)
        if header is None:
            return None
        conn.set(HEADER_KEY, header)
        if header.source is not None:
            conn.set_peer_address(header.source)
        return header.length

    def parse(self, data: bytes | bytearray | memoryview) -> ProxyHeader | None:
        """:func:`parse_header` with this preamble's limits (for tests and other servers)."""
        return parse_header(data, max_size=self.header_max_size, versions=self.versions)


def _show(peer: Address | Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return repr(peer)
