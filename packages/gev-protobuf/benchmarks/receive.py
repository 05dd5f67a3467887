"""Micro-benchmark of ProtobufProtocol.receive against receive() loops built on the public
scanners, in ns per read, with an echo handler that returns ``(type_name, payload)``.

Run from the repository root::

    PYTHONPATH=packages/gev-protobuf/src:packages/gev-core/src:packages/gev-ringbuffer/src \\
        python packages/gev-protobuf/benchmarks/receive.py

Each read is a ``bytes`` object, as the reactor passes a read to a protocol that sets
``accepts_bytes`` (a ``memoryview`` only when bytes are carried over from an earlier read).
"ping-pong" has one frame per read (a client waiting for each answer, the bench/run.py
``pb50x64`` scenario); "pipelined" has 100 per read.

The variants are timed interleaved, round after round, and the best round is kept: on a
shared virtual machine a variant timed in one block can be slowed down as a whole.

Measured on CPython 3.11 (shared 2-vCPU VM, pure Python, best of 40 rounds), ping-pong: the
shipped receive about 0.8 µs per read (a frame of the last one's size and name costs one
compare there), a scan_frames loop about 1.8 µs, a parse_frame loop about 1.7 µs; pipelined,
all three within ~15 % of each other per frame. bench/RESULTS.md has callgrind counts of
receive() by stream shape, the more stable comparison on a noisy machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from gev_core import ProtocolError
from gev_protobuf import FrameError, ProtobufProtocol, pack_message, parse_frame, scan_frames


class _Handler:
    def on_message(self, conn: Any, type_name: str, payload: bytes) -> tuple[str, bytes]:
        return type_name, payload


class _Conn:
    closing = False
    handler = _Handler()


PROTOCOL = ProtobufProtocol()
Receive = Callable[[Any, bytes, list[Any]], int]


def receive_scan_frames(conn: Any, data: bytes, out: list[Any]) -> int:
    """What receive would be on top of scan_frames alone."""
    try:
        frames, consumed = scan_frames(data, PROTOCOL.max_frame_size)
    except FrameError as exc:
        raise ProtocolError(str(exc)) from exc
    on_message = conn.handler.on_message
    pack = PROTOCOL.pack
    for type_name, payload in frames:
        if conn.closing:
            break
        reply = on_message(conn, type_name, payload)
        if reply is not None:
            out.append(pack(conn, reply))
    return consumed


def receive_parse_frame(conn: Any, data: bytes, out: list[Any]) -> int:
    """What receive would be on top of a parse_frame loop."""
    buf = data
    limit = PROTOCOL.max_frame_size
    on_message = conn.handler.on_message
    pack = PROTOCOL.pack
    offset = 0
    while not conn.closing:
        try:
            frame = parse_frame(buf, offset, limit)
        except FrameError as exc:
            raise ProtocolError(str(exc)) from exc
        if frame is None:
            break
        offset, type_name, payload = frame
        reply = on_message(conn, type_name, payload)
        if reply is not None:
            out.append(pack(conn, reply))
    return offset


VARIANTS: dict[str, Receive] = {
    "ProtobufProtocol": PROTOCOL.receive,
    "scan_frames loop": receive_scan_frames,
    "parse_frame loop": receive_parse_frame,
}


def _best_ns_per_frame(data: bytes, frames: int, calls: int, rounds: int) -> dict[str, float]:
    conn = _Conn()
    out: list[Any] = []
    best = dict.fromkeys(VARIANTS, float("inf"))
    for _ in range(rounds):
        for name, receive in VARIANTS.items():
            start = time.perf_counter_ns()
            for _ in range(calls):
                receive(conn, data, out)
                out.clear()
            elapsed = (time.perf_counter_ns() - start) / calls / frames
            best[name] = min(best[name], elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="interleaved timing rounds")
    args = parser.parse_args()

    frame = pack_message("bench.Echo", b"x" * 64)
    cases = []
    for label, count in (("ping-pong, 1 frame/read", 1), ("pipelined, 100 frames/read", 100)):
        stream = frame * count
        for name, receive in VARIANTS.items():
            out: list[Any] = []
            assert receive(_Conn(), stream, out) == len(stream), name
            assert b"".join(out) == stream, name
        cases.append((label, stream, count))

    print(f"Python {sys.version.split()[0]}; ns per frame, best of {args.rounds} rounds")
    print(f"{'case':30}" + "".join(f"{name:>20}" for name in VARIANTS))
    for label, stream, count in cases:
        best = _best_ns_per_frame(stream, count, max(1, 5000 // count), args.rounds)
        print(f"{label:30}" + "".join(f"{best[name]:20.0f}" for name in VARIANTS))


if __name__ == "__main__":
    main()
