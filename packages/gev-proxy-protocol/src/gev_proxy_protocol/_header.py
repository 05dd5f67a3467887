"""What a PROXY protocol header says: the client's addresses, and (v2) its TLVs.

Names and numbers are those of HAProxy's specification ("The PROXY protocol, Versions 1 & 2",
``doc/proxy-protocol.txt`` in HAProxy's sources), sections 2.1 (v1) and 2.2 (v2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "TLV",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "Address",
    "ProxyHeader",
    "SSLClient",
    "SSLInfo",
    "SSLSubtype",
    "TLVType",
]

#: The 12 bytes every v2 header starts with (section 2.2).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: The longest v1 line, CRLF included (section 2.1): ``PROXY UNKNOWN`` with two full IPv6
#: addresses and ports.
V1_MAX_LENGTH = 107

#: An endpoint as the socket module gives it: ``(ip, port)`` for TCP over IPv4 or IPv6, the path
#: for a Unix socket (``"\\0name"`` in Linux's abstract namespace).
Address = tuple[str, int] | str


class TLVType(enum.IntEnum):
    """The registered v2 TLV types (section 2.2)."""

    ALPN = 0x01
    AUTHORITY = 0x02
    CRC32C = 0x03
    NOOP = 0x04
    UNIQUE_ID = 0x05
    SSL = 0x20
    NETNS = 0x30


class SSLSubtype(enum.IntEnum):
    """The sub-TLVs of a ``PP2_TYPE_SSL`` TLV (section 2.2.6)."""

    VERSION = 0x21
    CN = 0x22
    CIPHER = 0x23
    SIG_ALG = 0x24
    KEY_ALG = 0x25
    GROUP = 0x26
    SIG_SCHEME = 0x27
    CLIENT_CERT = 0x28


class SSLClient(enum.IntFlag):
    """The ``client`` bit field of a ``PP2_TYPE_SSL`` TLV."""

    SSL = 0x01  #: the client connected over TLS
    CERT_CONN = 0x02  #: it presented a certificate on this connection
    CERT_SESS = 0x04  #: it presented one at least once in this TLS session


@dataclass(frozen=True)
class TLV:
    """One type-length-value vector of a v2 header, as received."""

    #: The type byte (see :class:`TLVType`; 0xE0-0xEF are application-specific).
    type: int
    #: The value bytes.
    value: bytes


@dataclass(frozen=True)
class SSLInfo:
    """What the proxy knows of the client's TLS connection (``PP2_TYPE_SSL``).

    The strings are ``None`` when the proxy did not send that sub-TLV.
    """

    #: :class:`SSLClient` flags.
    client: SSLClient
    #: 0 when the client presented a certificate and it was verified; non-zero otherwise.
    verify: int
    #: TLS version, e.g. ``"TLSv1.3"``.
    version: str | None = None
    #: Common Name of the client certificate's subject.
    cn: str | None = None
    #: Cipher, e.g. ``"TLS_AES_256_GCM_SHA384"``.
    cipher: str | None = None
    #: Algorithm that signed the certificate the proxy presented, e.g. ``"RSA-SHA256"``.
    sig_alg: str | None = None
    #: Algorithm of that certificate's key, e.g. ``"RSA2048"``.
    key_alg: str | None = None
    #: Key exchange group, e.g. ``"X25519"``.
    group: str | None = None
    #: Signature scheme of the handshake, e.g. ``"rsa_pss_rsae_sha256"``.
    sig_scheme: str | None = None
    #: The client certificate, DER-encoded.
    client_cert: bytes | None = None
    #: Every sub-TLV as received, unknown ones included.
    tlvs: tuple[TLV, ...] = ()

    @property
    def tls(self) -> bool:
        """True if the client connected over TLS."""
        return bool(self.client & SSLClient.SSL)

    @property
    def client_cert_verified(self) -> bool:
        """True if the client presented a certificate on this connection and it was verified."""
        return bool(self.client & SSLClient.CERT_CONN) and self.verify == 0


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY protocol header.

    ``source`` and ``destination`` are the client's address and the address it connected to on
    the proxy. Both are ``None`` when the header says to use the connection's own endpoints: a
    v2 ``LOCAL`` command (the proxy's health checks), v1 ``UNKNOWN``, or a v2 ``AF_UNSPEC``
    block.
    """

    #: 1 (text) or 2 (binary).
    version: int
    #: ``"PROXY"`` (relayed on behalf of a client) or ``"LOCAL"`` (v2 only: the proxy's own).
    command: str
    #: ``"TCP4"``, ``"TCP6"``, ``"UNIX"`` or ``"UNSPEC"`` (v1 ``UNKNOWN``).
    family: str
    #: ``"STREAM"``, ``"DGRAM"`` or ``"UNSPEC"`` (v1 is always ``"STREAM"`` or ``"UNSPEC"``).
    transport: str
    #: The client's address.
    source: Address | None
    #: The address the client connected to.
    destination: Address | None
    #: The header's length on the wire, in bytes: what the connection's data starts after.
    length: int
    #: Every TLV except ``NOOP``s, in order (v2; empty for v1).
    tlvs: tuple[TLV, ...] = ()
    #: ``PP2_TYPE_ALPN``: the application protocol the client negotiated, e.g. ``b"h2"``.
    alpn: bytes | None = None
    #: ``PP2_TYPE_AUTHORITY``: the host name the client asked for (TLS SNI).
    authority: str | None = None
    #: ``PP2_TYPE_UNIQUE_ID``: the proxy's id of the connection (up to 128 bytes).
    unique_id: bytes | None = None
    #: ``PP2_TYPE_NETNS``: the network namespace the proxy accepted the connection in.
    netns: str | None = None
    #: ``PP2_TYPE_CRC32C``: the header's checksum, already verified.
    crc32c: int | None = None
    #: ``PP2_TYPE_SSL``: the client's TLS connection to the proxy.
    ssl: SSLInfo | None = field(default=None)

    @property
    def proxied(self) -> bool:
        """True if the header carries the client's address (``source`` is set)."""
        return self.source is not None

    def tlv(self, type: int) -> bytes | None:
        """The value of the first TLV of ``type`` (an application-specific one, say), or None."""
        for tlv in self.tlvs:
            if tlv.type == type:
                return tlv.value
        return None
