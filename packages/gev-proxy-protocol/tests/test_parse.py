"""The parser against the specification: golden vectors, every malformation, "need more"."""

from __future__ import annotations

import struct

import pytest
from gev_proxy_protocol import (
    MIN_MAX_SIZE,
    TLV,
    V2_SIGNATURE,
    ProxyProtocolError,
    SSLClient,
    TLVType,
    crc32c,
    encode_v1,
    encode_v2,
    parse_header,
)

# Captured from HAProxy 2.6 (send-proxy-v2, proxy-v2-options crc32c,unique-id) in front of a
# plain socket: a client at 127.0.0.5:42607 connected to the frontend at 127.0.0.1:45055.
HAPROXY_V2 = bytes.fromhex(
    "0d0a0d0a000d0a515549540a211100447f0000057f000001a66fafff03000417"
    "ca47e505002e37463030303030353a413636465f37463030303030313a414646"
    "465f36423046464241445f303030313a32464541"
)


def test_crc32c_check_values() -> None:
    # RFC 3720, appendix B.4, and the usual check value.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


def test_the_spec_v1_example() -> None:
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"
    header = parse_header(data)
    assert header is not None
    assert (header.version, header.command, header.family) == (1, "PROXY", "TCP4")
    assert header.source == ("192.168.0.1", 56324)
    assert header.destination == ("192.168.0.11", 443)
    assert data[header.length :] == b"GET / HTTP/1.1\r\n"


def test_v1_tcp6_and_the_longest_line() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(line) == 104
    header = parse_header(line)
    assert header is not None and header.source == (full, 65535) and header.length == 104
    assert parse_header(b"PROXY TCP6 ::ffff:10.1.2.3 ::1 1 0\r\n").source == (  # type: ignore[union-attr]
        "::ffff:a01:203",
        1,
    )
    worst = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(worst) == 107
    header = parse_header(worst)
    assert header is not None and header.source is None and header.length == 107


def test_v1_unknown_keeps_the_real_endpoints() -> None:
    header = parse_header(b"PROXY UNKNOWN\r\nrest")
    assert header is not None and not header.proxied and header.length == 15
    assert header.family == "UNSPEC"


def test_haproxy_v2_golden_vector() -> None:
    header = parse_header(HAPROXY_V2 + b"hello")
    assert header is not None
    assert header.length == len(HAPROXY_V2) == 84
    assert header.source == ("127.0.0.5", 42607)
    assert header.destination == ("127.0.0.1", 45055)
    assert header.unique_id == b"7F000005:A66F_7F000001:AFFF_6B0FFBAD_0001:2FEA"
    assert header.crc32c == 0x17CA47E5
    flipped = bytearray(HAPROXY_V2)
    flipped[20] ^= 1  # the source address: the checksum no longer matches
    with pytest.raises(ProxyProtocolError, match="CRC32C mismatch"):
        parse_header(flipped)


def test_v2_ipv6_unix_local_and_tlvs() -> None:
    v6 = encode_v2(("2001:db8::1", 1), ("2001:db8::2", 443))
    header = parse_header(v6)
    assert header is not None and header.family == "TCP6" and header.length == 16 + 36
    assert header.source == ("2001:db8::1", 1)
    unix = parse_header(encode_v2("/run/client.sock", "\0abstract"))
    assert unix is not None and unix.source == "/run/client.sock"
    assert unix.destination == "\0abstract"
    local = parse_header(encode_v2(local=True, tlvs=[(TLVType.NOOP, b"pad")], with_crc32c=True))
    assert local is not None and local.command == "LOCAL" and local.source is None
    assert local.tlvs == (TLV(TLVType.CRC32C, local.tlv(TLVType.CRC32C) or b""),)

    ssl = struct.pack("!BI", SSLClient.SSL | SSLClient.CERT_CONN, 0)
    for kind, value in [(0x21, b"TLSv1.3"), (0x22, "Ünïcode CN".encode()), (0x23, b"AES"),
                        (0x24, b"RSA-SHA256"), (0x25, b"RSA2048"), (0x26, b"X25519"),
                        (0x27, b"rsa_pss_rsae_sha256"), (0x28, b"\x30\x82DER")]:  # fmt: skip
        ssl += struct.pack("!BH", kind, len(value)) + value
    data = encode_v2(
        ("10.0.0.1", 5000),
        ("10.0.0.2", 443),
        tlvs=[
            (TLVType.ALPN, b"h2"),
            (TLVType.AUTHORITY, "bücher.example".encode()),
            (TLVType.UNIQUE_ID, b"x" * 128),
            (TLVType.SSL, ssl),
            (TLVType.NETNS, b"blue"),
            (0xE1, b"custom"),
        ],
    )
    header = parse_header(data)
    assert header is not None
    assert header.alpn == b"h2" and header.authority == "bücher.example"
    assert header.unique_id == b"x" * 128 and header.netns == "blue"
    assert header.tlv(0xE1) == b"custom" and header.tlv(0xE2) is None
    info = header.ssl
    assert info is not None and info.tls and info.client_cert_verified
    assert (info.version, info.cn, info.cipher) == ("TLSv1.3", "Ünïcode CN", "AES")
    assert (info.sig_alg, info.key_alg, info.group) == ("RSA-SHA256", "RSA2048", "X25519")
    assert info.sig_scheme == "rsa_pss_rsae_sha256" and info.client_cert == b"\x30\x82DER"


def test_encoders_round_trip() -> None:
    for header_bytes in (
        encode_v1(("1.2.3.4", 1), ("5.6.7.8", 2)),
        encode_v1(("::1", 1), ("::2", 2)),
        encode_v1(None, None),
        encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), with_crc32c=True),
    ):
        header = parse_header(header_bytes)
        assert header is not None and header.length == len(header_bytes)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not a PROXY protocol header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx\r\n", "bare CR"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "single spaces"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "Leading zeros"),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "invalid"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "invalid"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "invalid"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "scope id"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "without zeros"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "out of range"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "without zeros"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\t\r\n", "control characters"),
        (b"PROXY TCP4 \xc3\xa9.2.3.4 5.6.7.8 1 2\r\n", "US-ASCII"),
        (b"PROXY " + b"A" * 101, "no CRLF within 107 bytes"),
        (V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1, not 2"),
        (V2_SIGNATURE + b"\x22\x11\x00\x00", "unknown command"),
        (V2_SIGNATURE + b"\x21\x13\x00\x0c" + bytes(12), "invalid family"),
        (V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), "invalid family"),
        (V2_SIGNATURE + b"\x21\x10\x00\x0c" + bytes(12), "invalid family"),
        (V2_SIGNATURE + b"\x21\x11\x00\x0b" + bytes(11), "shorter than the 12"),
        (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "shorter than the 36"),
        (V2_SIGNATURE + b"\x21\x31\x00\x24" + bytes(36), "shorter than the 216"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "claims 65551 bytes"),
        (V2_SIGNATURE + b"\x21\x11\x00\x0e" + bytes(12) + b"\x01\x00", "stray byte"),
        (V2_SIGNATURE + b"\x21\x11\x00\x10" + bytes(12) + b"\x01\x00\x05a", "claims 5 bytes"),
        (encode_v2(("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(1, b"a"), (1, b"b")]), "twice"),
        (encode_v2(("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(3, b"abc")]), "not 4"),
        (encode_v2(("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(5, b"u" * 129)]), "more than 128"),
        (encode_v2(("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(2, b"\xff")]), "not valid utf-8"),
        (encode_v2(("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(0x30, "é".encode())]), "ascii"),
        (encode_v2(("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(0x20, b"\x01\0\0")]), "shorter than 5"),
        (
            encode_v2(("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(0x20, b"\x01\0\0\0\0\x21\0\x09ab")]),
            "claims 9 bytes",
        ),
        (
            encode_v2(("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(0x20, b"\x01\0\0\0\0\x21\0")]),
            "truncated sub-TLV",
        ),
        (
            encode_v2(
                ("1.1.1.1", 1), ("2.2.2.2", 2), tlvs=[(0x20, b"\x01\0\0\0\0" + b"\x23\0\0" * 2)]
            ),
            "CIPHER appears twice",
        ),
    ],
)
def test_malformed_headers_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse_header(data + b"payload" if not data.startswith(b"PROXY " + b"A") else data)


def test_oversized_v2_is_refused_before_its_bytes_arrive() -> None:
    # Only the 16 fixed bytes are in: the claim alone is enough to refuse.
    head = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 5000)
    with pytest.raises(ProxyProtocolError, match="claims 5016 bytes, more than the maximum"):
        parse_header(head)
    assert parse_header(head, max_size=5016) is None  # allowed: wait for the rest
    with pytest.raises(ValueError):
        parse_header(head, max_size=MIN_MAX_SIZE - 1)


@pytest.mark.parametrize(
    "complete",
    [
        encode_v1(("1.2.3.4", 1000), ("5.6.7.8", 80)),
        encode_v2(("1.2.3.4", 1000), ("5.6.7.8", 80), tlvs=[(1, b"h2")], with_crc32c=True),
        b"PROXY UNKNOWN\r\n",
    ],
)
def test_every_prefix_asks_for_more(complete: bytes) -> None:
    for n in range(len(complete)):
        assert parse_header(complete[:n]) is None, n
    assert parse_header(complete) is not None


def test_versions_can_be_restricted() -> None:
    with pytest.raises(ProxyProtocolError, match="expected the v2 signature, got"):
        parse_header(b"PROXY UNKNOWN\r\n", versions=(2,))
    with pytest.raises(ProxyProtocolError, match="expected v1 'PROXY ', got"):
        parse_header(encode_v2(local=True), versions=(1,))
