"""Properties of the parser over generated headers and arbitrary bytes (hypothesis)."""

from __future__ import annotations

import ipaddress

from gev_proxy_protocol import (
    MAX_SIZE_LIMIT,
    MIN_MAX_SIZE,
    ProxyProtocolError,
    crc32c,
    encode_v1,
    encode_v2,
    parse_header,
)
from hypothesis import given, settings
from hypothesis import strategies as st

ports = st.integers(0, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
endpoints = st.one_of(
    st.tuples(st.tuples(v4, ports), st.tuples(v4, ports)),
    st.tuples(st.tuples(v6, ports), st.tuples(v6, ports)),
)
tlv_types = st.sampled_from([0x01, 0x02, 0x04, 0x05, 0x30, 0xE0, 0xEF, 0xF0, 0xFF])
tlv_lists = st.lists(
    st.tuples(tlv_types, st.binary(max_size=40).map(lambda b: b.hex()[:40].encode())),
    max_size=6,
    unique_by=lambda t: t[0] if t[0] != 0x04 else object(),
)


@given(endpoints, st.binary(max_size=64))
def test_v1_round_trip_and_the_rest_untouched(pair: tuple, rest: bytes) -> None:
    (src, dst) = pair
    wire = encode_v1(src, dst)
    header = parse_header(wire + rest)
    assert header is not None and header.length == len(wire)
    assert header.source == (str(ipaddress.ip_address(src[0])), src[1])
    assert header.destination == (str(ipaddress.ip_address(dst[0])), dst[1])


@given(endpoints, tlv_lists, st.booleans(), st.binary(max_size=64))
def test_v2_round_trip(pair: tuple, tlvs: list, with_crc: bool, rest: bytes) -> None:
    src, dst = pair
    wire = encode_v2(src, dst, tlvs=tlvs, with_crc32c=with_crc)
    header = parse_header(wire + rest)
    assert header is not None and header.length == len(wire)
    assert header.source == (str(ipaddress.ip_address(src[0])), src[1])
    kept = [(t, v) for t, v in tlvs if t != 0x04]
    assert [(t.type, t.value) for t in header.tlvs if t.type != 0x03] == kept
    assert (header.crc32c is not None) == with_crc


@given(endpoints, tlv_lists, st.data())
def test_any_split_of_a_header_needs_more_then_parses(pair: tuple, tlvs: list, data) -> None:
    wire = encode_v2(*pair, tlvs=tlvs) if data.draw(st.booleans()) else encode_v1(*pair)
    cut = data.draw(st.integers(0, len(wire) - 1))
    assert parse_header(wire[:cut]) is None
    assert parse_header(wire) is not None


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(MIN_MAX_SIZE, MAX_SIZE_LIMIT))
def test_arbitrary_bytes_never_crash_nor_overreach(data: bytes, max_size: int) -> None:
    try:
        header = parse_header(data, max_size=max_size)
    except ProxyProtocolError:
        return
    if header is not None:
        assert header.length <= len(data)
        assert header.length <= max(max_size, 107)


@settings(max_examples=300)
@given(endpoints, st.binary(min_size=1, max_size=8), st.data())
def test_a_corrupted_checksummed_header_is_refused(pair: tuple, noise: bytes, data) -> None:
    wire = bytearray(encode_v2(*pair, with_crc32c=True))
    # Flip bits in the address block (after the 16 fixed bytes, before the TLV).
    at = data.draw(st.integers(16, 16 + (12 if "." in pair[0][0] else 36) - 1))
    wire[at] ^= noise[0] or 1
    try:
        parse_header(bytes(wire))
    except ProxyProtocolError as exc:
        assert "CRC32C mismatch" in str(exc)
    else:
        raise AssertionError("a corrupted header passed its checksum")


@given(st.binary(max_size=200))
def test_crc32c_is_linear_in_its_input(data: bytes) -> None:
    # A cheap independent check of the table: CRC(a) ^ CRC(b) ^ CRC(c) == CRC(a ^ b ^ c) for
    # equal lengths (CRC with init and final XOR is affine; three terms cancel the constant).
    b = bytes((x * 7 + 3) & 0xFF for x in data)
    c = bytes((x * 13 + 1) & 0xFF for x in data)
    xor = bytes(x ^ y ^ z for x, y, z in zip(data, b, c, strict=True))
    assert crc32c(data) ^ crc32c(b) ^ crc32c(c) == crc32c(xor)
