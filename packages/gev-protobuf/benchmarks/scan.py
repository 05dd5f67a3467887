"""Micro-benchmark of the protobuf frame scanner, in ns per frame.

Run from the repository root::

    PYTHONPATH=packages/gev-protobuf/src python packages/gev-protobuf/benchmarks/scan.py

Each case mimics a protocol's per-read ``receive``: scan one read's worth of bytes (a
``memoryview`` over a reused ``bytearray``, as the reactor passes it), call a handler per
frame and collect the replies. "pipelined" fills a 64 KiB read with frames; "ping-pong" has
one frame per read, as with a client that waits for each answer.

Besides the shipped API (``scan_frames``, a ``parse_frame`` loop, ``FrameDecoder``) it times
the alternatives that were rejected, so the choice can be re-checked on another interpreter:
slicing the memoryview per frame instead of copying the read once, and a generator. Their
validation is trimmed to the hot-path checks, which only flatters them.

On CPython 3.11 ``scan_frames`` was the fastest with many frames per read (about 10-20 %
ahead of the ``parse_frame`` loop and the generator); with one frame per read the
``parse_frame`` loop was a couple of hundred ns per read ahead, which is small next to the
two system calls that read costs. Hence ``scan_frames`` for the protocol.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Callable, Iterator

from gev_protobuf import FrameDecoder, pack_message, parse_frame, scan_frames

MAX = 4 * 1024 * 1024
_unpack_header = struct.Struct(">IH").unpack_from
_names: dict[bytes, str] = {}


class _Conn:
    closing = False


_conn = _Conn()


def _on_message(conn: _Conn, type_name: str, payload: bytes) -> bytes | None:
    return None


# Each receive_* has the shape of a gev-core Protocol.receive: the handler gets the connection,
# replies are collected in `out`, and dispatch stops once the connection is closing.
_out: list[bytes] = []


# --- shipped API --------------------------------------------------------------------------


def receive_scan_frames(data: memoryview) -> int:
    conn, out = _conn, _out
    frames, consumed = scan_frames(data, MAX)
    on_message = _on_message
    for type_name, payload in frames:
        if conn.closing:
            break
        reply = on_message(conn, type_name, payload)
        if reply is not None:
            out.append(reply)
    return consumed


def receive_parse_frame(data: memoryview) -> int:
    # Unlike scan_frames this copies even an incomplete frame; a real protocol would have to
    # guard against that too, which would cost a little more per read.
    conn, out = _conn, _out
    buf = data.tobytes()
    on_message = _on_message
    offset = 0
    while not conn.closing and (frame := parse_frame(buf, offset, MAX)) is not None:
        offset, type_name, payload = frame
        reply = on_message(conn, type_name, payload)
        if reply is not None:
            out.append(reply)
    return offset


def receive_frame_decoder(data: memoryview) -> int:
    conn, out = _conn, _out
    decoder = FrameDecoder(MAX)
    decoder.feed(data)
    on_message = _on_message
    for type_name, payload in decoder:
        reply = on_message(conn, type_name, payload)
        if reply is not None:
            out.append(reply)
    return len(data) - decoder.buffered


# --- rejected alternatives (validation trimmed to the hot-path checks) ----------------------


def _scan_view_slices(data: memoryview) -> tuple[list[tuple[str, bytes]], int]:
    """Slice the view per frame (two view objects and two copies per frame)."""
    frames: list[tuple[str, bytes]] = []
    size = len(data)
    offset = 0
    while size - offset >= 6:
        length, type_len = _unpack_header(data, offset)
        if length > MAX or type_len > length - 2:
            raise ValueError("bad frame")
        end = offset + 4 + length
        if end > size:
            break
        name_end = offset + 6 + type_len
        raw = data[offset + 6 : name_end].tobytes()
        try:
            name = _names[raw]
        except KeyError:
            name = _names[raw] = raw.decode()
        frames.append((name, data[name_end:end].tobytes()))
        offset = end
    return frames, offset


def receive_view_slices(data: memoryview) -> int:
    conn, out = _conn, _out
    frames, consumed = _scan_view_slices(data)
    for type_name, payload in frames:
        if conn.closing:
            break
        reply = _on_message(conn, type_name, payload)
        if reply is not None:
            out.append(reply)
    return consumed


def _iter_frames(buf: bytes) -> Iterator[tuple[int, str, bytes]]:
    size = len(buf)
    offset = 0
    while size - offset >= 6:
        length, type_len = _unpack_header(buf, offset)
        if length > MAX or type_len > length - 2:
            raise ValueError("bad frame")
        end = offset + 4 + length
        if end > size:
            return
        name_end = offset + 6 + type_len
        raw = buf[offset + 6 : name_end]
        try:
            name = _names[raw]
        except KeyError:
            name = _names[raw] = raw.decode()
        yield end, name, buf[name_end:end]
        offset = end


def receive_generator(data: memoryview) -> int:
    conn, out = _conn, _out
    consumed = 0
    for consumed, type_name, payload in _iter_frames(data.tobytes()):  # noqa: B007
        reply = _on_message(conn, type_name, payload)
        if reply is not None:
            out.append(reply)
        if conn.closing:
            break
    return consumed


VARIANTS: list[Callable[[memoryview], int]] = [
    receive_scan_frames,
    receive_parse_frame,
    receive_frame_decoder,
    receive_view_slices,
    receive_generator,
]


def _time_per_frame(
    func: Callable[[memoryview], int], data: memoryview, frames: int, budget: float
) -> float:
    """Best-of-runs time per frame, in ns; each run lasts about ``budget`` seconds."""
    calls = 1
    while True:  # calibrate so one run is long enough for the clock
        start = time.perf_counter_ns()
        for _ in range(calls):
            func(data)
        elapsed = time.perf_counter_ns() - start
        if elapsed > budget * 1e9 or calls > 1 << 24:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(9):
        start = time.perf_counter_ns()
        for _ in range(calls):
            func(data)
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.05, help="seconds per timing run")
    args = parser.parse_args()

    print(f"Python {sys.version.split()[0]}; ns per frame, best of 10 runs")
    type_name = "gevtest.Msg1"
    cases = []
    for payload_size in (16, 128, 1024):
        frame = pack_message(type_name, b"x" * payload_size)
        count = max(1, (64 * 1024) // len(frame))
        cases.append((f"pipelined, {payload_size:>4} B payload, {count:>4}/read", frame, count))
    for payload_size in (16, 1024):
        frame = pack_message(type_name, b"x" * payload_size)
        cases.append((f"ping-pong, {payload_size:>4} B payload,    1/read", frame, 1))

    header = f"{'case':44}" + "".join(
        f"{f.__name__.removeprefix('receive_'):>14}" for f in VARIANTS
    )
    print(header)
    for label, frame, count in cases:
        # A partial frame at the end, as a real read usually has.
        data = memoryview(bytearray(frame * count + frame[:5]))
        expected = len(frame) * count
        row = f"{label:44}"
        for func in VARIANTS:
            assert func(data) == expected, func.__name__
            row += f"{_time_per_frame(func, data, count, args.budget):14.0f}"
        print(row)

    payload = b"x" * 128
    calls = 200_000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(calls):
            pack_message(type_name, payload)
        best = min(best, (time.perf_counter_ns() - start) / calls)
    print(f"pack_message, 128 B payload: {best:.0f} ns")


if __name__ == "__main__":
    main()
