from __future__ import annotations

import socket

import pytest
from gev_core import Handler, Server
from gev_core._bind import parse_address


def test_parse_forms():
    assert parse_address("127.0.0.1:80") == (socket.AF_INET, ("127.0.0.1", 80))
    assert parse_address(":80", "tcp4") == (socket.AF_INET, ("0.0.0.0", 80))
    fam, addr = parse_address("[::1]:81", "tcp6")
    assert fam == socket.AF_INET6 and addr[:2] == ("::1", 81)
    assert parse_address(("127.0.0.1", 82))[1] == ("127.0.0.1", 82)


@pytest.mark.parametrize("bad", ["nope", "host:", "1.2.3.4:99999", "1.2.3.4:x"])
def test_parse_errors(bad):
    with pytest.raises(ValueError):
        parse_address(bad)


def test_bad_network_and_options():
    with pytest.raises(ValueError, match="network"):
        parse_address(":1", "udp")
    with pytest.raises(TypeError, match="on_message"):
        Server(object())
    with pytest.raises(ValueError, match="load_balance"):
        Server(Handler(), address=("127.0.0.1", 0), load_balance="random")
    with pytest.raises(ValueError, match="num_loops"):
        Server(Handler(), address=("127.0.0.1", 0), num_loops=0)


def test_address_in_use_is_reported_at_construction():
    first = Server(Handler(), address=("127.0.0.1", 0))
    try:
        with pytest.raises(OSError):
            Server(Handler(), address=first.address)
    finally:
        first.stop()


def test_reuse_port_lets_two_servers_share_a_port():
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT")
    a = Server(Handler(), address=("127.0.0.1", 0), reuse_port=True)
    b = Server(Handler(), address=a.address, reuse_port=True)
    assert a.port == b.port
    a.stop()
    b.stop()
