"""gev-proxy-protocol: HAProxy's PROXY protocol (v1 text, v2 binary) for gev listeners.

Behind a load balancer every connection comes from the balancer. With the PROXY protocol the
balancer sends, before the client's first byte, a header with the client's address (and in v2,
TLVs: ALPN, SNI, TLS details, a unique id). :class:`ProxyProtocol` reads it as the listener's
*preamble*: ``conn.peer_addr`` becomes the client's, and :func:`proxy_header` gives the whole
header. ``gev serve --proxy-protocol`` (or ``Server(options={"proxy_protocol": True})``)
enables it.

The parser is sans-IO: :func:`parse_header` takes bytes and answers a :class:`ProxyHeader`,
``None`` (need more bytes) or :class:`ProxyProtocolError`; :func:`encode_v1` and
:func:`encode_v2` build headers (for tests, or a client connecting through to such a server).
"""

from __future__ import annotations

# First: with GEV_PURE_PYTHON=1 the modules below are then loaded from their .py source.
from . import _compiled
from .__about__ import __version__
from ._errors import ProxyProtocolError
from ._header import (
    TLV,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    Address,
    ProxyHeader,
    SSLClient,
    SSLInfo,
    SSLSubtype,
    TLVType,
)
from ._options import preamble_from_options
from ._parse import (
    DEFAULT_MAX_SIZE,
    MAX_SIZE_LIMIT,
    MIN_MAX_SIZE,
    crc32c,
    encode_v1,
    encode_v2,
    parse_header,
)
from ._preamble import (
    DEFAULT_TIMEOUT,
    HEADER_KEY,
    POLICIES,
    ProxyProtocol,
    TrustedNetworks,
    proxy_header,
)

COMPILED: bool = _compiled.package_is_compiled(__name__)
"""True when this package runs compiled code (a wheel built with a C compiler, and
``GEV_PURE_PYTHON`` not set); False for the pure-Python source. See the docs' "Compiled
code" page."""

__all__ = [
    "COMPILED",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_TIMEOUT",
    "HEADER_KEY",
    "MAX_SIZE_LIMIT",
    "MIN_MAX_SIZE",
    "POLICIES",
    "TLV",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "Address",
    "ProxyHeader",
    "ProxyProtocol",
    "ProxyProtocolError",
    "SSLClient",
    "SSLInfo",
    "SSLSubtype",
    "TLVType",
    "TrustedNetworks",
    "__version__",
    "crc32c",
    "encode_v1",
    "encode_v2",
    "parse_header",
    "preamble_from_options",
    "proxy_header",
]
