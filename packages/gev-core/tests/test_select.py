"""First-bytes protocol selection under hostile input: a timeout of its own, explicit refusals."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest
from gev_core import NEED_MORE_DATA, Handler, LineProtocol, get_plugin_manager, hookimpl
from gev_core.testing import connect, recv_exactly, serve


class Alpha(LineProtocol):
    name = "alpha"


class Beta(LineProtocol):
    name = "beta"


class Provider:
    """A plugin that provides alpha and beta and recognises both by their first byte."""

    @hookimpl
    def gev_register_protocols(self) -> list[Any]:
        return [Alpha, Beta]

    @hookimpl
    def gev_select_protocol(self, connection: Any, data: bytes, candidates: list[str]) -> Any:
        if not data:
            return NEED_MORE_DATA
        for name in ("alpha", "beta"):
            if name in candidates and data[:1] == name[:1].upper().encode():
                return name
        return None


class Tagger(Handler):
    def __init__(self) -> None:
        self.closed = 0

    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        return conn.protocol.name.encode() + b":" + bytes(data)

    def on_close(self, conn: Any) -> None:
        self.closed += 1


def plugins() -> Any:
    pm = get_plugin_manager(autoload=False)
    pm.register(Provider(), name="alphabeta")
    return pm


def _closed_by_server(sock: socket.socket, timeout: float = 20.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_a_client_that_never_chooses_is_dropped_after_the_selection_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gev")
    handler = Tagger()
    with (
        serve(handler, protocol=["alpha", "beta"], plugins=plugins(), select_timeout=0.3) as srv,
        connect(srv) as silent,
        connect(srv) as chosen,
    ):
        chosen.sendall(b"Ahello\n")
        assert recv_exactly(chosen, 13) == b"alpha:Ahello\n"
        started = time.monotonic()
        assert _closed_by_server(silent)
        assert time.monotonic() - started < 15
        # The selection timeout never applies once a protocol is chosen.
        time.sleep(0.5)
        chosen.sendall(b"Aagain\n")
        assert recv_exactly(chosen, 13) == b"alpha:Aagain\n"
    lines = [r.getMessage() for r in caplog.records]
    assert any("no protocol chosen" in line and "0.3" in line for line in lines), lines


def test_the_selection_timeout_has_a_default() -> None:
    with serve(Tagger(), protocol=["alpha", "beta"], plugins=plugins()) as srv:
        assert srv.select_timeout == 10.0
    with (
        pytest.raises(ValueError),
        serve(Tagger(), protocol=["alpha", "beta"], plugins=plugins(), select_timeout=-1),
    ):
        pass


def test_bytes_no_protocol_claims_are_refused_when_the_fallback_has_a_selector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gev")
    handler = Tagger()
    with (
        serve(handler, protocol=["alpha", "beta"], plugins=plugins()) as srv,
        connect(srv) as hostile,
        connect(srv) as fine,
    ):
        host, port = hostile.getsockname()[:2]
        peer = f"{host}:{port}"
        hostile.sendall(b"\x00\x00\xff\xffgarbage\n")
        assert _closed_by_server(hostile)
        fine.sendall(b"Bok\n")
        assert recv_exactly(fine, 9) == b"beta:Bok\n"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "no protocol claims" in line and peer in line and "alpha" in line and "beta" in line


def test_a_fallback_without_a_selector_takes_what_nobody_claims_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gev")
    with (
        serve(Tagger(), protocol=["alpha", "line"], plugins=plugins()) as srv,
        connect(srv) as sock,
    ):
        sock.sendall(b"plain\n")
        assert recv_exactly(sock, 11) == b"line:plain\n"
    decisions = [r for r in caplog.records if "no protocol claims" in r.getMessage()]
    assert len(decisions) == 1 and decisions[0].levelno == logging.DEBUG
    assert "fallback" in decisions[0].getMessage()
