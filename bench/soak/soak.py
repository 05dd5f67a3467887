#!/usr/bin/env python3
"""Soak and fault suite: long runs over real sockets against a real ``gev serve`` process.

    python3 -m hatch run bench:python bench/soak/soak.py                 # every scenario, ~3 min
    python3 -m hatch run bench:python bench/soak/soak.py --scale 10      # ten times longer
    python3 -m hatch run bench:python bench/soak/soak.py echo churn      # some of them

Scenarios (each starts its own server, on an ephemeral loopback port, and stops it):

* ``echo``   random-size echoes (1 B up to 1 MiB) on every protocol (default, line,
             length-field, protobuf, WebSocket with and without permessage-deflate), every
             byte verified; server RSS and open descriptors before and after.
* ``threads`` compressed WebSocket connections echoing random-size messages while a thread of
             the application pushes text to each of them with ``conn.send``: every echo and
             every push verified, in order (both go through the connection's compressor).
* ``churn``  connect / (upgrade) / close cycles on the plain, protobuf and WebSocket servers,
             a mix of clean closes, aborts (RST) and half-done handshakes; RSS and descriptor
             growth after the cycles.
* ``slow``   clients that ask for pushes and never read them, beside a normal client: the
             server's RSS must stay bounded (backpressure, ``max_buffered``) and the normal
             client served.
* ``flood``  permessage-deflate flooders (a few KiB that inflate to megabytes) beside a
             normal client whose round-trip latency is measured, against a quiet baseline.
* ``stop``   WebSocket and plain clients connected (the plain ones still sending), then
             SIGTERM: counts of 1001 close frames, clean FINs and on_close calls.

Exits 1 if any check fails. Needs the ``websockets`` client library (the bench and test
environments have it). Not part of ``hatch test``: it runs for minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LOGS = ROOT / "bench" / ".build" / "soak"  # server output, while a server runs
KIB = 1024
MIB = 1024 * 1024

FAILURES: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILURES.append(what)


# ---------------------------------------------------------------------------- the server


class Server:
    """``python -m gev_core serve soak_app:echo ...`` in a process of its own."""

    def __init__(self, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ)
        paths = [str(p) for p in sorted((ROOT / "packages").glob("*/src"))]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"server-{self.port}.log"
        self.log = open(self.log_path, "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gev_core",
                "serve",
                "soak_app:echo",
                "--app-dir",
                str(HERE),
                "--address",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
                *args,
            ],
            env=env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start") from None
                time.sleep(0.05)
        time.sleep(0.2)  # let the probe's close land

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KIB
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()
        self.log_path.unlink(missing_ok=True)


@contextmanager
def server(*args: str) -> Iterator[Server]:
    srv = Server(*args)
    try:
        yield srv
    finally:
        srv.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def random_size(rng: random.Random, top: int) -> int:
    # Log-uniform: as many tiny messages as huge ones.
    return max(1, min(top, int(2 ** rng.uniform(0, top.bit_length()))))


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


# ---------------------------------------------------------------------------- echo


def _raw_echo(port: int, seconds: float, top: int, rng: random.Random) -> tuple[int, int]:
    msgs = nbytes = 0
    with connect(port) as sock:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            payload = rng.randbytes(random_size(rng, top))
            sock.sendall(payload)
            assert recv_exactly(sock, len(payload)) == payload, "echo differs"
            msgs += 1
            nbytes += len(payload)
    return msgs, nbytes


def _line_echo(port: int, seconds: float, top: int, rng: random.Random) -> tuple[int, int]:
    msgs = nbytes = 0
    with connect(port) as sock:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            payload = rng.randbytes(random_size(rng, top)).replace(b"\n", b"n")
            payload = payload.replace(b"\r", b"r")
            sock.sendall(payload + b"\n")
            assert recv_exactly(sock, len(payload) + 1) == payload + b"\n", "echo differs"
            msgs += 1
            nbytes += len(payload)
    return msgs, nbytes


def _length_echo(port: int, seconds: float, top: int, rng: random.Random) -> tuple[int, int]:
    msgs = nbytes = 0
    with connect(port) as sock:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            payload = rng.randbytes(random_size(rng, top))
            frame = struct.pack(">I", len(payload)) + payload
            # Sent in random pieces: frames cut anywhere.
            pos = 0
            while pos < len(frame):
                step = rng.randint(1, len(frame) - pos)
                sock.sendall(frame[pos : pos + step])
                pos += step
            assert recv_exactly(sock, len(frame)) == frame, "echo differs"
            msgs += 1
            nbytes += len(payload)
    return msgs, nbytes


def _protobuf_echo(port: int, seconds: float, top: int, rng: random.Random) -> tuple[int, int]:
    from gev_protobuf import pack_message

    msgs = nbytes = 0
    with connect(port) as sock:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            batch = [
                pack_message(f"soak.T{rng.randint(0, 9)}", rng.randbytes(random_size(rng, top)))
                for _ in range(rng.randint(1, 4))
            ]
            stream = b"".join(batch)
            cut = rng.randint(0, len(stream))
            sock.sendall(stream[:cut])
            sock.sendall(stream[cut:])
            assert recv_exactly(sock, len(stream)) == stream, "echo differs"
            msgs += len(batch)
            nbytes += len(stream)
    return msgs, nbytes


def _ws_echo(port: int, seconds: float, top: int, rng: random.Random, deflate: bool) -> Any:
    from websockets.asyncio.client import connect as ws_connect

    async def run() -> tuple[int, int]:
        msgs = nbytes = 0
        uri = f"ws://127.0.0.1:{port}/"
        async with ws_connect(
            uri, compression="deflate" if deflate else None, max_size=None, open_timeout=60
        ) as ws:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                size = random_size(rng, top)
                message: str | bytes
                if rng.random() < 0.5:
                    message = rng.randbytes(size)
                else:  # up to 4 bytes a character: stay within the message limit
                    message = "".join(rng.choices("aZ09 é€😀", k=max(1, size // 4)))
                await ws.send(message)
                assert await ws.recv() == message, "echo differs"
                msgs += 1
                nbytes += size
        return msgs, nbytes

    return asyncio.run(run())


def scenario_echo(scale: float) -> None:
    print("echo: random sizes, every byte verified", flush=True)
    seconds = 12 * scale
    clients = 6
    cases: list[tuple[str, list[str], Callable[..., tuple[int, int]], int]] = [
        ("default", [], _raw_echo, MIB),
        ("line", ["--protocol", "line"], _line_echo, 60 * KIB),
        ("length-field", ["--protocol", "length-field"], _length_echo, MIB),
        ("protobuf", ["--protocol", "protobuf"], _protobuf_echo, MIB),
        (
            "websocket",
            ["--protocol", "websocket"],
            lambda p, s, t, r: _ws_echo(p, s, t, r, False),
            MIB,
        ),
        (
            "websocket+deflate",
            ["--protocol", "websocket"],
            lambda p, s, t, r: _ws_echo(p, s, t, r, True),
            MIB,
        ),
    ]
    for name, args, client, top in cases:
        with server(*args) as srv:
            rss0, fds0 = srv.rss(), srv.fds()
            results: list[Any] = [None] * clients

            def run(
                i: int, results: list[Any], client: Any = client, top: int = top, srv: Server = srv
            ) -> None:
                try:
                    results[i] = client(srv.port, seconds, top, random.Random(i))
                except BaseException as exc:  # reported below
                    results[i] = exc

            threads = [threading.Thread(target=run, args=(i, results)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(0.5)
            errors = [r for r in results if not isinstance(r, tuple)]
            msgs = sum(r[0] for r in results if isinstance(r, tuple))
            nbytes = sum(r[1] for r in results if isinstance(r, tuple))
            rss1, fds1 = srv.rss(), srv.fds()
            check(
                not errors and msgs > 0,
                f"{name:18s} {msgs:7d} messages, {mib(nbytes):>10s} verified"
                f" ({clients} clients, {seconds:.0f} s); RSS {mib(rss0)} -> {mib(rss1)},"
                f" fds {fds0} -> {fds1}" + (f"; errors: {errors[:2]}" if errors else ""),
            )
            check(fds1 == fds0, f"{name:18s} descriptors back to {fds0}")


# ---------------------------------------------------------------------------- threads


def _ws_pushed(port: int, seconds: float, pushes: int, rng: random.Random) -> tuple[int, int, Any]:
    """Echo random binary messages while the server's thread pushes ``pushes`` texts."""
    from soak_app import push_text
    from websockets.asyncio.client import connect as ws_connect

    async def run() -> tuple[int, int, Any]:
        echoes = got = 0
        uri = f"ws://127.0.0.1:{port}/"
        async with ws_connect(uri, compression="deflate", max_size=None, open_timeout=60) as ws:
            assert ws.protocol.extensions, "permessage-deflate was not negotiated"

            def push(message: Any) -> None:
                nonlocal got
                assert isinstance(message, str), "a push that is not text"
                assert message == push_text(got), f"push {got} differs"
                got += 1

            await ws.send(f"pushes {pushes} {seconds * 0.8:.3f}")
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                payload = rng.randbytes(random_size(rng, 64 * KIB))
                await ws.send(payload)
                while isinstance(message := await asyncio.wait_for(ws.recv(), 60), str):
                    push(message)
                assert message == payload, "echo differs"
                echoes += 1
            while got < pushes:
                push(await asyncio.wait_for(ws.recv(), 60))
        return echoes, got, ws.close_code

    return asyncio.run(run())


def scenario_threads(scale: float) -> None:
    print("threads: conn.send from a thread on compressed WebSocket connections", flush=True)
    seconds = 15 * scale
    clients = 20
    pushes = int(1500 * scale)
    with server("--protocol", "websocket") as srv:
        rss0, fds0 = srv.rss(), srv.fds()
        results: list[Any] = [None] * clients

        def run(i: int) -> None:
            try:
                results[i] = _ws_pushed(srv.port, seconds, pushes, random.Random(i))
            except BaseException as exc:  # reported below
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.5)
        rss1, fds1 = srv.rss(), srv.fds()
        errors = [r for r in results if not isinstance(r, tuple)]
        done = [r for r in results if isinstance(r, tuple)]
        codes = sorted({r[2] for r in done})
        out = srv.output()
        check(
            not errors and len(done) == clients,
            f"{len(done)} of {clients} clients: {sum(r[0] for r in done)} echoes and"
            f" {sum(r[1] for r in done)} pushes from a thread verified in order, over"
            f" permessage-deflate ({seconds:.0f} s); close codes {codes}"
            + (f"; errors: {errors[:2]}" if errors else ""),
        )
        check(
            "decompression" not in out and "Traceback" not in out,
            "nothing logged about decompression or a traceback by the server",
        )
        check(
            fds1 == fds0,
            f"RSS {mib(rss0)} -> {mib(rss1)}, descriptors {fds0} -> {fds1} after the clients left",
        )


# ---------------------------------------------------------------------------- churn


def _ws_cycle(port: int, i: int) -> None:
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    ext = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if i % 2 else b""
    with connect(port) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + ext + b"\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise EOFError("no handshake response")
            head += chunk
        if i % 3 == 0:  # a clean close: our close frame, the server's answer, its FIN
            sock.sendall(
                b"\x88\x82abcd" + bytes(a ^ b for a, b in zip(b"\x03\xe8", b"ab", strict=True))
            )
            while sock.recv(4096):
                pass
        elif i % 3 == 1:  # an abortive close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _pb_cycle(port: int, i: int) -> None:
    from gev_protobuf import pack_message

    with connect(port) as sock:
        frame = pack_message("soak.Churn", b"x" * (i % 100))
        if i % 2:
            sock.sendall(frame)
            recv_exactly(sock, len(frame))
        sock.sendall(frame[: i % len(frame)])  # and a partial frame left behind
        if i % 3 == 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _plain_cycle(port: int, i: int) -> None:
    with connect(port) as sock:
        if i % 2:
            sock.sendall(b"ping")
            recv_exactly(sock, 4)
        if i % 3 == 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def scenario_churn(scale: float) -> None:
    print("churn: connect / close cycles", flush=True)
    cycles = int(4000 * scale)
    workers = 4
    for name, args, cycle in [
        ("plain", [], _plain_cycle),
        ("protobuf", ["--protocol", "protobuf"], _pb_cycle),
        ("websocket", ["--protocol", "websocket"], _ws_cycle),
    ]:
        with server(*args) as srv:
            # Warm up (allocator pools, caches) before the baseline.
            for i in range(200):
                cycle(srv.port, i)
            time.sleep(0.5)
            rss0, fds0 = srv.rss(), srv.fds()
            errors: list[BaseException] = []
            started = time.monotonic()

            def run(
                w: int, errors: list[BaseException], cycle: Any = cycle, srv: Server = srv
            ) -> None:
                for i in range(w, cycles, workers):
                    try:
                        cycle(srv.port, i)
                    except OSError as exc:
                        errors.append(exc)

            threads = [threading.Thread(target=run, args=(w, errors)) for w in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            time.sleep(3)  # lingering closes end (the server's linger timeout is 2 s)
            rss1, fds1 = srv.rss(), srv.fds()
            check(
                not errors and fds1 == fds0,
                f"{name:10s} {cycles} cycles in {elapsed:.0f} s: fds {fds0} -> {fds1},"
                f" RSS {mib(rss0)} -> {mib(rss1)} ({(rss1 - rss0) / cycles:+.0f} B/cycle)"
                + (f"; errors: {errors[:2]}" if errors else ""),
            )
            # Allocator noise aside, a closed connection must leave nothing behind.
            allowed = MIB + 256 * cycles
            check(rss1 - rss0 < allowed, f"{name:10s} RSS growth under {mib(allowed)}")


# ---------------------------------------------------------------------------- slow readers


def scenario_slow(scale: float) -> None:
    print("slow: clients that never read their pushes", flush=True)
    hogs = 20
    with server("--protocol", "line") as srv:
        rss0 = srv.rss()
        socks = []
        for _ in range(hogs):
            sock = connect(srv.port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"push 200 65536\n")  # 12.5 MiB each, never read
            socks.append(sock)
        peak = rss0
        served = 0
        end = time.monotonic() + 10 * scale
        with connect(srv.port) as normal:
            while time.monotonic() < end:
                normal.sendall(b"still here\n")
                assert recv_exactly(normal, 11) == b"still here\n"
                served += 1
                peak = max(peak, srv.rss())
                time.sleep(0.01)
        gone = 0
        for sock in socks:
            sock.settimeout(10)
            try:
                while sock.recv(1 << 20):
                    pass
                gone += 1  # EOF: the server let it go
            except TimeoutError:
                pass
            except ConnectionResetError:
                gone += 1
            sock.close()
        out = srv.output()
        check(served > 0, f"normal client served {served} round trips meanwhile")
        check(
            peak - rss0 < 600 * MIB,
            f"server RSS {mib(rss0)} -> peak {mib(peak)} with {hogs} x 12.5 MiB of unread pushes"
            f" ({out.count('max_write_buffer')} closed by max_write_buffer,"
            f" {out.count('max_buffered')} by max_buffered, {gone} of {hogs} closed)",
        )


# ---------------------------------------------------------------------------- deflate flood


def _frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = 0x80 | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, 0x80 | 127)) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def _ws_open(port: int, deflate: bool) -> socket.socket:
    sock = connect(port)
    ext = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + ext
        + b"\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    return sock


def _round_trips(sock: socket.socket, until: Callable[[], bool]) -> list[float]:
    times = []
    frame = _frame(0x1, b"ping")
    while not until():
        started = time.perf_counter()
        sock.sendall(frame)
        assert recv_exactly(sock, 6) == b"\x81\x04ping"
        times.append(time.perf_counter() - started)
    return times


def _percentiles(times: list[float]) -> str:
    if not times:
        return "no round trips"
    ms = sorted(t * 1000 for t in times)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"n={len(ms)} p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {ms[-1]:.2f} ms"


def scenario_flood(scale: float) -> None:
    print("flood: permessage-deflate amplification beside a normal client", flush=True)
    flooders = 4
    seconds = 10 * scale
    with server("--protocol", "websocket") as srv:
        normal = _ws_open(srv.port, False)
        quiet_end = time.monotonic() + 2
        baseline = _round_trips(normal, lambda: time.monotonic() > quiet_end)
        stop = threading.Event()
        inflated = [0]

        def flood() -> None:
            sock = _ws_open(srv.port, True)
            sock.settimeout(5)  # shared by the sender and the drain thread
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            message = bytes(1_000_000)
            frame = _frame(0x2, _deflated(compressor, message), rsv1=True)
            sink = threading.Thread(target=_drain, args=(sock, stop), daemon=True)
            sink.start()
            try:
                while not stop.is_set():
                    sock.sendall(frame * 16)
                    inflated[0] += 16 * len(message)
            except OSError:  # a send timed out (half sent: this flood is over) or was refused
                pass
            stop.wait()
            sink.join(10)
            sock.close()

        threads = [threading.Thread(target=flood) for _ in range(flooders)]
        for t in threads:
            t.start()
        time.sleep(1)
        flood_end = time.monotonic() + seconds
        during = _round_trips(normal, lambda: time.monotonic() > flood_end)
        stop.set()
        for t in threads:
            t.join(30)
        normal.close()
        print(f"  quiet:  {_percentiles(baseline)}")
        print(
            f"  flood:  {_percentiles(during)} ({flooders} flooders, ~{mib(inflated[0])} sent"
            " inflated)"
        )
        check(len(during) > 10 * scale, "the normal client kept being served during the flood")
        worst = max(during) if during else float("inf")
        check(worst < 2.0, f"no round trip over 2 s during the flood (worst {worst * 1000:.0f} ms)")


def _deflated(compressor: Any, data: bytes) -> bytes:
    out: bytes = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def _drain(sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            if not sock.recv(1 << 20):
                return
        except TimeoutError:
            continue
        except OSError:
            return


# ---------------------------------------------------------------------------- graceful stop


def scenario_stop(scale: float) -> None:
    print("stop: SIGTERM with WebSocket and plain clients connected", flush=True)
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed

    ws_clients = int(200 * min(scale, 5))
    plain_clients = int(50 * min(scale, 5))
    with server("--protocol", "websocket,line") as srv:
        endings: list[str] = []
        ready = threading.Barrier(plain_clients + 1)

        def stream() -> None:
            sock = connect(srv.port)
            sock.sendall(b"hello\n")
            recv_exactly(sock, 6)
            sock.setblocking(False)
            ready.wait()
            try:
                while True:
                    try:
                        sock.send(b"x" * 100 + b"\n")
                    except BlockingIOError:
                        pass
                    try:
                        data = sock.recv(65536)
                        if data == b"":
                            endings.append("fin")
                            return
                    except BlockingIOError:
                        pass
                    time.sleep(0.005)
            except (ConnectionResetError, BrokenPipeError):
                endings.append("rst")
            finally:
                sock.close()

        async def ws_client(opened: list[int]) -> Any:
            async with ws_connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=60) as ws:
                await ws.send("hi")
                await ws.recv()
                opened.append(1)
                try:
                    await asyncio.wait_for(ws.recv(), 120)
                except ConnectionClosed as exc:
                    return exc
            return None

        async def main() -> list[Any]:
            opened: list[int] = []
            tasks = [asyncio.ensure_future(ws_client(opened)) for _ in range(ws_clients)]
            while len(opened) < ws_clients:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(ready.wait)
            await asyncio.sleep(0.5)
            srv.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

        threads = [threading.Thread(target=stream) for _ in range(plain_clients)]
        for t in threads:
            t.start()
        started = time.monotonic()
        results = asyncio.run(main())
        for t in threads:
            t.join(60)
        code = srv.proc.wait(60)  # no second SIGTERM: that one would kill it mid-exit
        elapsed = time.monotonic() - started
        out = srv.output()
        closes = [e.rcvd.code if e is not None and e.rcvd else None for e in results]
        clean = sum(1 for e in results if e is not None and e.sent is not None)
        on_close = next(
            (int(line.split()[-1]) for line in out.splitlines() if "soak: on_close" in line), -1
        )
        check(code == 0, f"exit status {code} ({elapsed:.1f} s from connect to exit)")
        check(
            closes.count(1001) == ws_clients,
            f"{closes.count(1001)} of {ws_clients} WebSocket clients got 1001; {clean} answered",
        )
        check(
            endings.count("fin") == plain_clients,
            f"{endings.count('fin')} of {plain_clients} plain clients ended with FIN"
            f" ({endings.count('rst')} with RST)",
        )
        # Each client plus the readiness probe.
        total = ws_clients + plain_clients + 1
        check(on_close == total, f"on_close ran {on_close} times for {total} connections")


# ---------------------------------------------------------------------------- main

SCENARIOS = {
    "echo": scenario_echo,
    "threads": scenario_threads,
    "churn": scenario_churn,
    "slow": scenario_slow,
    "flood": scenario_flood,
    "stop": scenario_stop,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every duration/count")
    args = ap.parse_args()
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    print(
        f"soak: {', '.join(names)}; scale {args.scale}; Python {platform.python_version()};"
        f" {os.cpu_count()} CPUs; {platform.platform()}",
        flush=True,
    )
    started = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        SCENARIOS[name](args.scale)
        print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
    print(
        f"soak: {'FAILED: ' + '; '.join(FAILURES) if FAILURES else 'all checks passed'}"
        f" ({time.monotonic() - started:.0f} s)"
    )
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
