"""WebSocketProtocol.shared_packer: which frames fan-out may share, decoded by a wsproto client
(sans-IO; the real-socket, real-client side is in the repository's tests/test_pubsub_*.py)."""

from __future__ import annotations

from typing import Any

from gev_core.testing import FakeConnection
from gev_websocket import Deflate, Upgrader, WebSocketProtocol, WebSocketSession, build_message
from gev_websocket import testing as wst
from gev_websocket._shared import COMPRESS_MIN_SIZE
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate


def ws_protocol(upgrader: Upgrader | None = None) -> WebSocketProtocol:
    # No handshake timer: these sessions live on a fake connection, without a loop.
    base = upgrader or Upgrader()
    return WebSocketProtocol(Upgrader(compression=base.compression, handshake_timeout=None))


def connected(protocol: WebSocketProtocol, deflate: bool) -> tuple[Any, Any, FakeConnection]:
    """A session of ``protocol`` past its handshake with a wsproto client, on a fake conn."""
    conn = FakeConnection(protocol=protocol)
    protocol.connection_made(conn)  # type: ignore[arg-type]
    session = conn.state
    client, request = wst.wsproto_client([PerMessageDeflate()] if deflate else [])
    accept = wst.connect(session, client, request)
    assert bool(accept.extensions) is deflate
    return session, client, conn


def decode(client: Any, frames: list[bytes]) -> list[str | bytes]:
    out: list[str | bytes] = []
    for event in wst.client_events(client, frames):
        assert isinstance(event, (TextMessage, BytesMessage)), event
        out.append(event.data if isinstance(event.data, str) else bytes(event.data))
    return out


def test_plain_sessions_share_build_message() -> None:
    protocol = ws_protocol(Upgrader(compression=False))
    session, client, conn = connected(protocol, deflate=False)
    packer = protocol.shared_packer(conn)  # type: ignore[arg-type]
    assert packer is build_message
    assert conn.pinned_packer is build_message  # pinned once the handshake completed
    for message in ("héllo", b"\x00\x01", "x" * 70000):
        assert packer(message) == session.send(message)
    assert decode(client, [packer("a"), packer(b"b")]) == ["a", b"b"]


def test_nothing_is_shared_before_the_handshake_or_after_a_close() -> None:
    protocol = ws_protocol()
    conn = FakeConnection(protocol=protocol)
    protocol.connection_made(conn)  # type: ignore[arg-type]
    assert protocol.shared_packer(conn) is None  # type: ignore[arg-type]
    assert conn.pinned_packer is None
    assert protocol.pack(conn, "early") == b""  # type: ignore[arg-type]
    session, _, conn = connected(protocol, deflate=False)
    session.close(1000)
    assert protocol.shared_packer(conn) is None  # type: ignore[arg-type]
    assert protocol.pack(conn, "late") == b""  # type: ignore[arg-type]
    conn.state = None
    assert protocol.shared_packer(conn) is None  # type: ignore[arg-type]


def test_context_takeover_sessions_get_uncompressed_frames_and_stay_in_step() -> None:
    protocol = ws_protocol()  # permessage-deflate with context takeover (the default)
    session, client, conn = connected(protocol, deflate=True)
    assert isinstance(session, WebSocketSession) and session.compression_active
    packer = protocol.shared_packer(conn)  # type: ignore[arg-type]
    assert packer is build_message
    text = "the same words again and again " * 40
    frames = []
    expected: list[str | bytes] = []
    for i in range(6):
        # Shared frames (RSV1 clear) between messages compressed with the session's own
        # context: the client's inflater must see only the latter.
        shared = packer(f"{i} {text}")
        assert shared[0] == 0x81  # FIN, no RSV1, text
        own = session.send(text)
        assert own[0] == 0xC1  # FIN, RSV1: compressed with context takeover
        frames += [shared, own]
        expected += [f"{i} {text}", text]
    assert len(frames[-1]) < len(frames[1])  # the context really is taken over
    assert decode(client, frames) == expected


def test_no_context_takeover_sessions_share_one_compressed_frame() -> None:
    protocol = ws_protocol(Upgrader(compression=Deflate(server_no_context_takeover=True)))
    session, client, conn = connected(protocol, deflate=True)
    other, other_client, other_conn = connected(protocol, deflate=True)
    packer = protocol.shared_packer(conn)  # type: ignore[arg-type]
    assert packer is not None and packer is not build_message
    assert protocol.shared_packer(other_conn) is packer  # type: ignore[arg-type]
    assert conn.pinned_packer is packer and other_conn.pinned_packer is packer
    big = "compressible " * 100
    frame = packer(big)
    assert frame[0] == 0xC1 and len(frame) < len(big) // 4
    binary = packer(bytes(300))
    assert binary[0] == 0xC2
    small = packer("tiny")
    assert small == build_message("tiny")  # too small to be worth compressing
    assert len("tiny") < COMPRESS_MIN_SIZE
    for sess, cli in ((session, client), (other, other_client)):
        frames = [frame, sess.send(big), binary, small, frame]
        assert decode(cli, frames) == [big, big, bytes(300), "tiny", big]


def test_a_subclass_that_frames_per_connection_shares_nothing() -> None:
    class Counting(WebSocketProtocol):
        def shared_packer(self, conn: Any) -> None:
            return None

    protocol = Counting(Upgrader(handshake_timeout=None))
    _, _, conn = connected(protocol, deflate=False)
    assert protocol.shared_packer(conn) is None
    assert conn.pinned_packer is None  # what the subclass answers is what gets pinned
