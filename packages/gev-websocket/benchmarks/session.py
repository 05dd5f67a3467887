"""Per-message cost of receive + echo reply in WebSocketSession: fast path vs pure wsproto.

Each message is one masked binary (or text) client frame delivered as its own read, as a
reactor would see it with one message in flight per connection; the handler echoes it, so
the cost covers parsing, unmasking, the handler call and framing the reply.

    python benchmarks/session.py                 # 64 B and 4 KiB, binary
    python benchmarks/session.py --sizes 64 --text --view

Reported: ns per message (best of --repeat runs, CPU time of this process).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from gev_websocket import WebSocketSession
from gev_websocket.testing import BINARY, TEXT, frame, request_bytes
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, TextMessage


def echo(ctx: Any, message: Any) -> Any:
    return message


def frames(size: int, count: int, text: bool) -> list[bytes]:
    payload = b"a" * size if text else os.urandom(size)
    return [frame(TEXT if text else BINARY, payload, mask=os.urandom(4)) for _ in range(count)]


def bench_session(fast: bool, data: list[bytes], view: bool) -> Callable[[], None]:
    session = WebSocketSession(echo, fast_path=fast)
    session.receive(request_bytes(), [])
    receive = session.receive
    inputs: list[Any] = [memoryview(d) for d in data] if view else data

    def run() -> None:
        out: list[bytes] = []
        for chunk in inputs:
            receive(chunk, out)
            out.clear()

    return run


def bench_bare_wsproto(data: list[bytes], view: bool) -> Callable[[], None]:
    """wsproto used directly, the way its own examples do: the floor for any wrapper."""
    ws = WSConnection(ConnectionType.SERVER)
    ws.receive_data(request_bytes())
    list(ws.events())
    ws.send(AcceptConnection())

    def run() -> None:
        for chunk in data:
            ws.receive_data(chunk)
            for event in ws.events():
                if isinstance(event, (BytesMessage, TextMessage)):
                    ws.send(type(event)(data=event.data))

    return run


def bench_floor(data: list[bytes], view: bool) -> Callable[[], None]:
    """Just the benchmark loop (a call per message, no work): subtract mentally."""

    def receive(chunk: Any, out: list[bytes]) -> bool:
        return False

    def run() -> None:
        out: list[bytes] = []
        for chunk in data:
            receive(chunk, out)
            out.clear()

    return run


def measure(runs: dict[str, tuple[Callable[[], None], int]], repeat: int) -> dict[str, float]:
    """Best ns/message of each run; the runs are interleaved so that load from other
    processes hits all of them alike (on a shared machine, the minimum is the signal)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, (run, count) in runs.items():
            t0 = time.process_time()
            run()
            best[name] = min(best[name], (time.process_time() - t0) / count * 1e9)
    return best


def unmask_runs(n: int) -> dict[str, tuple[Callable[[], None], int]]:
    """Big-int XOR vs bytes.translate on one n-byte payload."""
    from gev_websocket._fastpath import _unmask_translate

    payload = os.urandom(n)
    key = int.from_bytes(os.urandom(4), "big")
    k = (n + 3) >> 2
    rep = ((1 << (32 * k)) - 1) // 0xFFFFFFFF  # the key repeated k times
    shift = (k << 5) - (n << 3)
    count = max(50, 400_000 // (n + 200))

    def by_int() -> None:
        for _ in range(count):
            (int.from_bytes(payload, "big") ^ (key * rep >> shift)).to_bytes(n, "big")

    def by_translate() -> None:
        for _ in range(count):
            _unmask_translate(payload, key)

    return {"int": (by_int, count), "tr": (by_translate, count)}


def unmask_crossover(repeat: int) -> None:
    """Print both unmasking costs per size, to place _fastpath.INT_UNMASK_MAX."""
    print(f"\n{'size':>6}  {'int XOR':>8}  {'translate':>9}   (ns/payload)")
    for n in (64, 256, 512, 1024, 2048, 4096, 65536):
        best = measure(unmask_runs(n), repeat)
        print(f"{n:>6}  {best['int']:>8.0f}  {best['tr']:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 4096])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--text", action="store_true", help="text frames instead of binary")
    parser.add_argument("--view", action="store_true", help="pass memoryviews, like a reactor")
    parser.add_argument("--mask", action="store_true", help="also time the unmask crossover")
    args = parser.parse_args()
    kind = "text" if args.text else "binary"
    print(
        f"{'size':>6} {'kind':>6}  {'fast path':>10}  {'via wsproto':>11}  "
        f"{'bare wsproto':>12}  {'loop floor':>10}  speed-up   (ns/message)"
    )
    for size in args.sizes:
        data = frames(size, args.count, args.text)
        small = data[: max(1, args.count // 10)]  # wsproto is slow: fewer messages suffice
        best = measure(
            {
                "fast": (bench_session(True, data, args.view), len(data)),
                "slow": (bench_session(False, small, args.view), len(small)),
                "bare": (bench_bare_wsproto(small, args.view), len(small)),
                "floor": (bench_floor(data, args.view), len(data)),
            },
            args.repeat,
        )
        fast, slow, bare, floor = best["fast"], best["slow"], best["bare"], best["floor"]
        print(
            f"{size:>6} {kind:>6}  {fast:>10.0f}  {slow:>11.0f}  {bare:>12.0f}  {floor:>10.0f}"
            f"  {slow / fast:>7.1f}x"
        )
    if args.mask:
        unmask_crossover(args.repeat)


if __name__ == "__main__":
    main()
