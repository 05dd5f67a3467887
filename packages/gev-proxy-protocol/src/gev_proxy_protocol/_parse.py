"""Sans-IO PROXY protocol: parse a header from the first bytes of a connection, or build one.

:func:`parse_header` looks at the bytes received so far and answers ``None`` ("need more
bytes"), a :class:`ProxyHeader` (whose ``length`` says how many bytes it took), or raises
:class:`ProxyProtocolError`. It keeps no state: call it again with the longer buffer. It never
waits for, nor allocates, more than it has bounded first -- v1 lines end within 107 bytes, and a
v2 header longer than ``max_size`` is refused as soon as its length field is in.

The rules are HAProxy's specification, strictly: exactly one space between v1 fields, canonical
addresses, no leading zeros, CRLF and nothing else to end the line; a v2 version of 2, a known
command, only the valid family/transport bytes, address blocks at least as long as their family
needs, TLVs that fit exactly, a ``CRC32C`` that matches. A registered TLV type may appear once.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable

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

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MAX_SIZE_LIMIT",
    "MIN_MAX_SIZE",
    "crc32c",
    "encode_v1",
    "encode_v2",
    "parse_header",
]

#: Default bound on a v2 header (16 bytes plus addresses and TLVs): roomy for what HAProxy
#: sends (addresses, ALPN, SNI, unique id, TLS details), small enough to refuse a peer that
#: claims more at once.
DEFAULT_MAX_SIZE = 4096
#: The smallest bound allowed: a header with two AF_UNIX addresses (16 + 216 bytes).
MIN_MAX_SIZE = 16 + 216
#: What the 16-bit length field can describe at most.
MAX_SIZE_LIMIT = 16 + 0xFFFF

_V1_PREFIX = b"PROXY "
_UNIQUE_ID_MAX = 128
_SSL_FIXED = 5  # client (1 byte) + verify (4 bytes)

_FAMILIES = {0x1: "TCP4", 0x2: "TCP6", 0x3: "UNIX"}
_TRANSPORTS = {0x1: "STREAM", 0x2: "DGRAM"}
# Section 2.2: "In practice, the following protocol bytes are expected"; anything else is to be
# rejected. \x00 is AF_UNSPEC/UNSPEC.
_VALID_FAMILY_BYTES = frozenset({0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32})
_ADDRESS_SIZES = {0x1: 12, 0x2: 36, 0x3: 216}
_SINGLE_TLVS = frozenset(
    {TLVType.ALPN, TLVType.AUTHORITY, TLVType.CRC32C, TLVType.UNIQUE_ID, TLVType.SSL, TLVType.NETNS}
)


# ------------------------------------------------------------------------------------- CRC32C


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B) of ``data``: the v2 header checksum.

    Pure Python, table-driven: a header is bounded by ``max_size``, and only one that carries a
    ``CRC32C`` TLV is checked.
    """
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ------------------------------------------------------------------------------------- parsing


def parse_header(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    versions: Iterable[int] = (1, 2),
) -> ProxyHeader | None:
    """Parse the PROXY protocol header at the start of ``data``.

    :param data: the first bytes of the connection, as many as have arrived (more than the
        header is fine: ``header.length`` says where the connection's own data starts).
    :param max_size: the largest v2 header accepted, in bytes (``MIN_MAX_SIZE`` to
        ``MAX_SIZE_LIMIT``). A v1 line is at most 107 bytes whatever this says.
    :param versions: the versions accepted: ``(1, 2)``, ``(2,)`` or ``(1,)``.
    :return: the header, or ``None`` when ``data`` is a valid beginning of one that needs more
        bytes.
    :raises ProxyProtocolError: ``data`` does not start with a valid header (the message says
        what is wrong), or a v2 header claims more than ``max_size`` bytes.
    """
    if not MIN_MAX_SIZE <= max_size <= MAX_SIZE_LIMIT:
        raise ValueError(f"max_size must be between {MIN_MAX_SIZE} and {MAX_SIZE_LIMIT}")
    allowed = frozenset(versions)
    head = bytes(data[:16])
    if 2 in allowed and head[:12] == V2_SIGNATURE[: len(head)]:
        if len(head) < 16:
            return None
        return _parse_v2(data, max_size)
    if 1 in allowed and head[:6] == _V1_PREFIX[: len(head)]:
        if len(head) < len(_V1_PREFIX):
            return None
        return _parse_v1(bytes(data[:V1_MAX_LENGTH]))
    expected = " or ".join(
        name for v, name in ((1, "v1 'PROXY '"), (2, "the v2 signature")) if v in allowed
    )
    raise ProxyProtocolError(f"not a PROXY protocol header: expected {expected}, got {head!r}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n")
    stray = data.find(b"\n")
    if stray != -1 and (end == -1 or stray < end + 1):
        raise ProxyProtocolError("PROXY v1 line ends with a bare LF (a CRLF is required)")
    cr = data.find(b"\r")
    if cr != -1 and cr != end and cr + 1 < len(data):
        raise ProxyProtocolError("PROXY v1 line contains a bare CR (a CRLF is required)")
    if end == -1:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(
                f"PROXY v1 line has no CRLF within {V1_MAX_LENGTH} bytes: {data[:40]!r}..."
            )
        return None
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"PROXY v1 line is not US-ASCII: {line!r}") from None
    if not text.isprintable():
        raise ProxyProtocolError(f"PROXY v1 line has control characters: {line!r}")
    parts = text.split(" ")
    proto = parts[1] if len(parts) > 1 else ""
    length = end + 2
    if proto == "UNKNOWN":
        # Section 2.1: the receiver must ignore anything else before the CRLF.
        return ProxyHeader(1, "PROXY", "UNSPEC", "UNSPEC", None, None, length)
    if proto not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(
            f"PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, not {proto!r}: {line!r}"
        )
    if len(parts) != 6 or "" in parts:
        raise ProxyProtocolError(
            f"PROXY v1 {proto} line must be 'PROXY {proto} SRC DST SPORT DPORT' with single"
            f" spaces: {line!r}"
        )
    src = _v1_address(parts[2], proto)
    dst = _v1_address(parts[3], proto)
    sport = _v1_port(parts[4])
    dport = _v1_port(parts[5])
    return ProxyHeader(1, "PROXY", proto, "STREAM", (src, sport), (dst, dport), length)


def _v1_address(text: str, proto: str) -> str:
    try:
        if proto == "TCP4":
            return str(ipaddress.IPv4Address(text))
        if "%" in text:
            raise ValueError("a scope id is not part of an address on the wire")
        return str(ipaddress.IPv6Address(text))
    except ValueError as exc:
        raise ProxyProtocolError(f"PROXY v1 {proto} address {text!r} is invalid: {exc}") from None


def _v1_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"PROXY v1 port {text!r} is not a decimal number without zeros")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"PROXY v1 port {port} is out of range")
    return port


def _parse_v2(data: bytes | bytearray | memoryview, max_size: int) -> ProxyHeader | None:
    ver_cmd = data[12]
    fam = data[13]
    size = 16 + ((data[14] << 8) | data[15])
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header has version {ver_cmd >> 4}, not 2")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError(f"PROXY v2 header has an unknown command 0x{command:x}")
    if size > max_size:
        raise ProxyProtocolError(
            f"PROXY v2 header claims {size} bytes, more than the maximum of {max_size}"
        )
    if len(data) < size:
        return None
    block = bytes(data[16:size])
    local = command == 0
    source: Address | None = None
    destination: Address | None = None
    family = transport = "UNSPEC"
    offset = 0
    if not local:
        if fam not in _VALID_FAMILY_BYTES:
            raise ProxyProtocolError(f"PROXY v2 header has an invalid family/transport 0x{fam:02x}")
        if fam:
            family, transport = _FAMILIES[fam >> 4], _TRANSPORTS[fam & 0x0F]
            needed = _ADDRESS_SIZES[fam >> 4]
            if len(block) < needed:
                raise ProxyProtocolError(
                    f"PROXY v2 {family} address block is {len(block)} bytes, shorter than the"
                    f" {needed} its family needs"
                )
            source, destination = _v2_addresses(fam >> 4, block[:needed])
            offset = needed
    else:
        # LOCAL: "discard the protocol block including the family which is ignored"; the TLVs
        # after the address block still count (a LOCAL header may carry a CRC32C).
        if fam >> 4 in _ADDRESS_SIZES and fam in _VALID_FAMILY_BYTES:
            offset = min(_ADDRESS_SIZES[fam >> 4], len(block))
    tlvs, crc_at = _parse_tlvs(block, offset, 16)
    if crc_at is not None:
        received = int.from_bytes(bytes(data[crc_at : crc_at + 4]), "big")
        zeroed = bytearray(data[:size])
        zeroed[crc_at : crc_at + 4] = b"\0\0\0\0"
        computed = crc32c(zeroed)
        if computed != received:
            raise ProxyProtocolError(
                f"PROXY v2 header CRC32C mismatch: it says 0x{received:08x}, its bytes give"
                f" 0x{computed:08x}"
            )
    command_name = "LOCAL" if local else "PROXY"
    return _header(2, command_name, family, transport, source, destination, size, tlvs)


def _v2_addresses(family: int, block: bytes) -> tuple[Address, Address]:
    if family == 0x1:
        src, dst, sport, dport = struct.unpack("!4s4sHH", block)
        return (
            (str(ipaddress.IPv4Address(src)), sport),
            (str(ipaddress.IPv4Address(dst)), dport),
        )
    if family == 0x2:
        src, dst, sport, dport = struct.unpack("!16s16sHH", block)
        return (
            (str(ipaddress.IPv6Address(src)), sport),
            (str(ipaddress.IPv6Address(dst)), dport),
        )
    return _unix_path(block[:108]), _unix_path(block[108:])


def _unix_path(raw: bytes) -> str:
    # sun_path: NUL-terminated, or (Linux abstract namespace) a NUL then the name, NUL-padded.
    if raw[:1] == b"\0":
        name = raw[1:].rstrip(b"\0")
        return "\0" + name.decode("utf-8", "surrogateescape") if name else ""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_tlvs(block: bytes, offset: int, base: int) -> tuple[list[TLV], int | None]:
    """The TLVs of ``block[offset:]``; and where (in the whole header) a CRC32C value sits."""
    tlvs: list[TLV] = []
    seen: set[int] = set()
    crc_at: int | None = None
    end = len(block)
    while offset < end:
        if end - offset < 3:
            raise ProxyProtocolError(
                f"PROXY v2 header ends with {end - offset} stray byte(s) after its TLVs"
            )
        kind = block[offset]
        length = (block[offset + 1] << 8) | block[offset + 2]
        start = offset + 3
        if start + length > end:
            raise ProxyProtocolError(
                f"PROXY v2 TLV 0x{kind:02x} claims {length} bytes, only {end - start} are left"
            )
        if kind in _SINGLE_TLVS:
            if kind in seen:
                raise ProxyProtocolError(f"PROXY v2 TLV {TLVType(kind).name} appears twice")
            seen.add(kind)
        if kind == TLVType.CRC32C:
            if length != 4:
                raise ProxyProtocolError(f"PROXY v2 CRC32C TLV is {length} bytes, not 4")
            crc_at = base + start
        if kind != TLVType.NOOP:
            tlvs.append(TLV(kind, block[start : start + length]))
        offset = start + length
    return tlvs, crc_at


def _text(value: bytes, what: str, encoding: str) -> str:
    try:
        return value.decode(encoding)
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"PROXY v2 {what} is not valid {encoding}: {value!r}") from None


def _header(
    version: int,
    command: str,
    family: str,
    transport: str,
    source: Address | None,
    destination: Address | None,
    length: int,
    tlvs: list[TLV],
) -> ProxyHeader:
    alpn: bytes | None = None
    authority: str | None = None
    unique_id: bytes | None = None
    netns: str | None = None
    crc: int | None = None
    ssl: SSLInfo | None = None
    for tlv in tlvs:
        kind, value = tlv.type, tlv.value
        if kind == TLVType.ALPN:
            alpn = value
        elif kind == TLVType.AUTHORITY:
            authority = _text(value, "AUTHORITY", "utf-8")
        elif kind == TLVType.UNIQUE_ID:
            if len(value) > _UNIQUE_ID_MAX:
                raise ProxyProtocolError(
                    f"PROXY v2 UNIQUE_ID is {len(value)} bytes, more than {_UNIQUE_ID_MAX}"
                )
            unique_id = value
        elif kind == TLVType.NETNS:
            netns = _text(value, "NETNS", "ascii")
        elif kind == TLVType.CRC32C:
            crc = int.from_bytes(value, "big")
        elif kind == TLVType.SSL:
            ssl = _ssl_info(value)
    return ProxyHeader(
        version,
        command,
        family,
        transport,
        source,
        destination,
        length,
        tuple(tlvs),
        alpn=alpn,
        authority=authority,
        unique_id=unique_id,
        netns=netns,
        crc32c=crc,
        ssl=ssl,
    )


_SSL_SUBTYPES = frozenset(int(t) for t in SSLSubtype)
_SSL_STRINGS = {
    SSLSubtype.VERSION: ("version", "ascii"),
    SSLSubtype.CN: ("cn", "utf-8"),
    SSLSubtype.CIPHER: ("cipher", "ascii"),
    SSLSubtype.SIG_ALG: ("sig_alg", "ascii"),
    SSLSubtype.KEY_ALG: ("key_alg", "ascii"),
    SSLSubtype.GROUP: ("group", "ascii"),
    SSLSubtype.SIG_SCHEME: ("sig_scheme", "ascii"),
}


def _ssl_info(value: bytes) -> SSLInfo:
    if len(value) < _SSL_FIXED:
        raise ProxyProtocolError(f"PROXY v2 SSL TLV is {len(value)} bytes, shorter than 5")
    client, verify = struct.unpack_from("!BI", value)
    subs: list[TLV] = []
    seen: set[int] = set()
    offset, end = _SSL_FIXED, len(value)
    while offset < end:
        if end - offset < 3:
            raise ProxyProtocolError("PROXY v2 SSL TLV ends with a truncated sub-TLV")
        kind = value[offset]
        length = (value[offset + 1] << 8) | value[offset + 2]
        start = offset + 3
        if start + length > end:
            raise ProxyProtocolError(
                f"PROXY v2 SSL sub-TLV 0x{kind:02x} claims {length} bytes, only {end - start}"
                " are left"
            )
        if kind in seen and kind in _SSL_SUBTYPES:
            raise ProxyProtocolError(f"PROXY v2 SSL sub-TLV {SSLSubtype(kind).name} appears twice")
        seen.add(kind)
        subs.append(TLV(kind, value[start : start + length]))
        offset = start + length
    fields: dict[str, str] = {}
    cert: bytes | None = None
    for sub in subs:
        if sub.type in _SSL_STRINGS:
            name, encoding = _SSL_STRINGS[SSLSubtype(sub.type)]
            fields[name] = _text(sub.value, f"SSL {name}", encoding)
        elif sub.type == SSLSubtype.CLIENT_CERT:
            cert = sub.value
    get = fields.get
    return SSLInfo(
        SSLClient(client & 0x07),
        verify,
        version=get("version"),
        cn=get("cn"),
        cipher=get("cipher"),
        sig_alg=get("sig_alg"),
        key_alg=get("key_alg"),
        group=get("group"),
        sig_scheme=get("sig_scheme"),
        client_cert=cert,
        tlvs=tuple(subs),
    )


# ------------------------------------------------------------------------------------ building


def _split(address: Address) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    if isinstance(address, str):
        raise ValueError(f"an (ip, port) pair is needed here, not {address!r}")
    host, port = address
    return ipaddress.ip_address(host), int(port)


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """A v1 header line: ``PROXY TCP4|TCP6 ...`` for IP endpoints, ``PROXY UNKNOWN`` for None.

    For tests and for clients that connect through to a server expecting the protocol.
    """
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    src, sport = _split(source)
    dst, dport = _split(destination)
    if src.version != dst.version:
        raise ValueError("source and destination must be of one address family")
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def encode_v2(
    source: Address | None = None,
    destination: Address | None = None,
    *,
    tlvs: Iterable[TLV | tuple[int, bytes]] = (),
    local: bool = False,
    with_crc32c: bool = False,
) -> bytes:
    """A v2 header for ``source`` and ``destination`` (``(ip, port)`` pairs or Unix paths).

    :param tlvs: TLVs to append, in order.
    :param local: a ``LOCAL`` command (the proxy's own connection; addresses are left out).
    :param with_crc32c: append a ``CRC32C`` TLV holding the header's checksum.
    """
    block = b""
    fam = 0x00
    if not local and source is not None and destination is not None:
        if isinstance(source, str) or isinstance(destination, str):
            if not (isinstance(source, str) and isinstance(destination, str)):
                raise ValueError("source and destination must be of one address family")
            block = _sun_path(source) + _sun_path(destination)
            fam = 0x31
        else:
            src, sport = _split(source)
            dst, dport = _split(destination)
            if src.version != dst.version:
                raise ValueError("source and destination must be of one address family")
            fam = 0x11 if src.version == 4 else 0x21
            block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    for tlv in tlvs:
        kind, value = (tlv.type, tlv.value) if isinstance(tlv, TLV) else tlv
        block += struct.pack("!BH", kind, len(value)) + bytes(value)
    crc_at = -1
    if with_crc32c:
        crc_at = 16 + len(block) + 3
        block += struct.pack("!BH", TLVType.CRC32C, 4) + b"\0\0\0\0"
    if len(block) > 0xFFFF:
        raise ValueError("a v2 header holds at most 65535 bytes after its first 16")
    header = bytearray(V2_SIGNATURE + bytes([0x20 if local else 0x21, fam]))
    header += struct.pack("!H", len(block)) + block
    if with_crc32c:
        header[crc_at : crc_at + 4] = crc32c(header).to_bytes(4, "big")
    return bytes(header)


def _sun_path(path: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    if len(raw) > 108:
        raise ValueError(f"a Unix socket path holds at most 108 bytes: {path!r}")
    return raw.ljust(108, b"\0")
