"""The protobuf examples, run as a user would run them, talked to over real sockets."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gev_protobuf")
pytest.importorskip("grpc_tools")

from gev_protobuf import FrameDecoder, pack_message

ROOT = Path(__file__).resolve().parent.parent


def read_frames(sock: socket.socket, count: int) -> list[tuple[str, bytes]]:
    decoder = FrameDecoder()
    frames: list[tuple[str, bytes]] = []
    while len(frames) < count:
        chunk = sock.recv(65536)
        assert chunk, f"server closed after {len(frames)} of {count} frames"
        decoder.feed(chunk)
        frames.extend(decoder)
    return frames


def wait_for_output(proc: subprocess.Popen, pattern: str, timeout: float = 20.0) -> str:
    """Read the process's stderr until ``pattern`` matches; return everything read."""
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen.decode(errors="replace")):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{pattern!r} not in the server's output:\n{seen.decode()}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"server exited; output:\n{seen.decode()}")
            seen += chunk
    return seen.decode(errors="replace")


def test_protobuf_echo_example(run_example):
    _proc, port = run_example("protobuf_echo.py")
    frames = [("msg1", b"\x08\x01"), ("", b""), ("bench.Echo", os.urandom(100_000))]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # gev's own example bytes, then the rest split mid-header.
        sock.sendall(bytes.fromhex("00000008 0004 6d736731 0801"))
        rest = b"".join(pack_message(n, p) for n, p in frames[1:])
        sock.sendall(rest[:3])
        time.sleep(0.05)
        sock.sendall(rest[3:])
        assert read_frames(sock, 3) == frames


def test_protobuf_echo_example_refuses_an_oversized_frame(run_example):
    proc, port = run_example("protobuf_echo.py", "--max-frame-size", "1000")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((1001).to_bytes(4, "big"))
        assert sock.recv(100) == b""
    wait_for_output(proc, r"closing .*: protobuf: .*exceeds max_frame_size 1000")


def test_protobuf_client_and_server_examples(run_example):
    server, port = run_example("protobuf/server.py")
    names = ["alice", "bob", "carol", "dave"]
    client = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "protobuf" / "client.py"), "--port", str(port)],
        input="".join(f"{name}\n" for name in names),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert client.returncode == 0, client.stderr
    assert client.stdout.count("Text to send: ") == len(names) + 1
    # Each line arrives as a parsed Msg1 or Msg2, whichever the client picked at random.
    output = wait_for_output(server, "OnClose")
    for name in names:
        msg1 = f'msg1 name: "{name}" id: 1'
        msg2 = f'msg2 name: "{name}" alias: "big {name}" id: 2'
        assert msg1 in output or msg2 in output, output


def test_protobuf_server_example_logs_unknown_types(run_example):
    server, port = run_example("protobuf/server.py")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(pack_message("msg9", b"\x01\x02\x03"))
        sock.sendall(pack_message("msg1", b"\x0a\x02hi\x10\x07"))  # Msg1{name: "hi", id: 7}
        output = wait_for_output(server, r'msg1 name: "hi" id: 7')
    assert "unknown msg type 'msg9' (3 bytes)" in output
