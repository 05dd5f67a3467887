"""ProxyProtocol as a listener preamble, against a fake connection; trust and policies; the
plugin's options."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from gev_proxy_protocol import (
    HEADER_KEY,
    ProxyProtocol,
    ProxyProtocolError,
    TrustedNetworks,
    encode_v1,
    encode_v2,
    preamble_from_options,
    proxy_header,
)
from gev_proxy_protocol import plugin as pp_plugin


class FakeConnection:
    """What the preamble needs of a connection (the PreambleConnection protocol)."""

    def __init__(self, peer: Any) -> None:
        self.remote_address = peer
        self.peer: Any = None
        self._kv: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        self._kv[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self._kv.get(key, default)

    def set_peer_address(self, address: Any) -> None:
        self.peer = address


def test_trusted_networks() -> None:
    nets = TrustedNetworks(["10.0.0.0/8", "192.168.1.7", " ::1/128"])
    assert ("10.1.2.3", 5) in nets and ("192.168.1.7", 1) in nets and ("::1", 1, 0, 0) in nets
    assert ("11.0.0.1", 1) not in nets and ("192.168.1.8", 1) not in nets
    assert ("::ffff:10.0.0.9", 1, 0, 0) in nets  # an IPv4 peer of a dual-stack listener
    assert ("fe80::1%eth0", 1) not in nets
    # Unix socket peers:
    assert "" in nets and "/run/lb.sock" in nets and b"\0lb" in nets and b"\0abc" in nets
    assert "10.9.9.9" in nets and "11.9.9.9" not in nets
    assert ("not-an-ip", 1) not in nets
    assert ("8.8.8.8", 1) in TrustedNetworks(None)
    with pytest.raises(ValueError, match="not a trusted network"):
        TrustedNetworks(["10.0.0.0/33"])


def test_a_header_sets_the_peer_and_is_kept() -> None:
    pp = ProxyProtocol(trusted=["127.0.0.0/8"])
    conn = FakeConnection(("127.0.0.1", 40000))
    assert pp.start(conn) is True
    wire = encode_v2(("203.0.113.9", 51000), ("198.51.100.1", 443), tlvs=[(1, b"h2")])
    data = wire + b"first bytes of the protocol"
    assert pp.feed(conn, data[:10]) is None
    assert pp.feed(conn, memoryview(data)) == len(wire)
    assert conn.peer == ("203.0.113.9", 51000)
    header = proxy_header(conn)
    assert header is not None and header.alpn == b"h2" and conn.get(HEADER_KEY) is header


def test_local_and_unknown_keep_the_real_peer() -> None:
    pp = ProxyProtocol()
    for wire in (encode_v2(local=True), encode_v1(None, None)):
        conn = FakeConnection(("10.0.0.1", 1))
        assert pp.start(conn)
        assert pp.feed(conn, wire) == len(wire)
        assert conn.peer is None and proxy_header(conn) is not None


def test_untrusted_peers_are_refused_or_served_directly() -> None:
    required = ProxyProtocol(trusted=["10.0.0.0/8"])
    with pytest.raises(ProxyProtocolError, match=r"203\.0\.113\.5:9 is not in the trusted proxy"):
        required.start(FakeConnection(("203.0.113.5", 9)))
    optional = ProxyProtocol(trusted=["10.0.0.0/8"], policy="optional")
    assert optional.start(FakeConnection(("203.0.113.5", 9))) is False
    trusted = FakeConnection(("10.0.0.5", 9))
    assert optional.start(trusted) is True
    with pytest.raises(ProxyProtocolError, match="not a PROXY protocol header"):
        optional.feed(trusted, b"GET / HTTP/1.1\r\n")  # no guessing: trusted peers must send one


def test_limits_and_versions() -> None:
    pp = ProxyProtocol(versions=(2,), max_size=300, timeout=3)
    assert pp.max_size == 300 and pp.timeout == 3
    assert ProxyProtocol(versions=(1,)).max_size == 107
    with pytest.raises(ProxyProtocolError, match="more than the maximum of 300"):
        pp.feed(FakeConnection(("1.1.1.1", 1)), encode_v2(tlvs=[(0xE0, b"x" * 400)]))
    with pytest.raises(ProxyProtocolError, match="expected the v2 signature"):
        pp.feed(FakeConnection(("1.1.1.1", 1)), b"PROXY UNKNOWN\r\n")
    for bad in ({"policy": "maybe"}, {"versions": (3,)}, {"max_size": 10}, {"timeout": 0}):
        with pytest.raises(ValueError):
            ProxyProtocol(**bad)


def test_options() -> None:
    assert preamble_from_options({}) is None
    pp = preamble_from_options(
        {
            "proxy_protocol": True,
            "proxy_protocol_trusted": ["10.0.0.0/8,192.168.0.0/16", "::1"],
            "proxy_protocol_policy": "optional",
            "proxy_protocol_timeout": 0,
            "proxy_protocol_version": "2",
            "proxy_protocol_max_size": 1024,
        }
    )
    assert pp is not None and pp.policy == "optional" and pp.timeout is None
    assert pp.versions == (2,) and pp.header_max_size == 1024
    assert len(pp.trusted.networks) == 3
    assert preamble_from_options({"proxy_protocol": "optional"}).policy == "optional"  # type: ignore[union-attr]
    ready = ProxyProtocol()
    assert preamble_from_options({"proxy_protocol": ready}) is ready
    with pytest.raises(ValueError, match="--proxy-protocol-trusted need"):
        preamble_from_options({"proxy_protocol_trusted": ["10.0.0.0/8"]})
    with pytest.raises(ValueError, match="must be True"):
        preamble_from_options({"proxy_protocol": "yes"})
    with pytest.raises(ValueError, match="not a trusted network"):
        preamble_from_options({"proxy_protocol": True, "proxy_protocol_trusted": "nope"})


def test_command_line_options() -> None:
    parser = argparse.ArgumentParser()
    pp_plugin.gev_addoption(parser)
    args = parser.parse_args(
        [
            "--proxy-protocol",
            "--proxy-protocol-trusted",
            "10.0.0.0/8",
            "--proxy-protocol-timeout",
            "2.5",
            "--proxy-protocol-max-size",
            "2048",
        ]
    )
    pp = preamble_from_options(vars(args))
    assert pp is not None and pp.timeout == 2.5 and pp.header_max_size == 2048
    with pytest.raises(SystemExit):
        parser.parse_args(["--proxy-protocol-max-size", "10"])


class _ServerWithPreambles:
    def __init__(self) -> None:
        self.preamble: Any = None

    def set_preamble(self, preamble: Any) -> None:
        self.preamble = preamble


def test_the_plugin_puts_the_preamble_on_the_listener() -> None:
    server = _ServerWithPreambles()
    config = argparse.Namespace(server=server, options={"proxy_protocol": True})
    pp_plugin.gev_configure(config)
    assert isinstance(server.preamble, ProxyProtocol)
    untouched = _ServerWithPreambles()
    pp_plugin.gev_configure(argparse.Namespace(server=untouched, options={}))
    assert untouched.preamble is None
