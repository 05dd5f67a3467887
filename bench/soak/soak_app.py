"""The application the soak runs under ``gev serve``: one handler for every protocol.

* Echo: bytes back as they came (default, line, length-field), ``(type name, payload)`` back
  for protobuf, text as text and binary as binary for WebSocket.
* ``push COUNT SIZE`` (line protocol): the server sends COUNT messages of SIZE bytes, the way a
  push gateway does, whether or not the client reads them (the slow-reader scenario).
* ``pushes COUNT SECONDS`` (WebSocket text): a thread of the application sends COUNT text
  messages (:func:`push_text`) with ``conn.send``, spread over SECONDS, while the loop keeps
  echoing: with permessage-deflate both streams share the connection's compressor (the
  threads scenario).
* ``on_close`` counts closed connections; the count is printed to stderr when the process
  exits (``soak: on_close COUNT``), so a graceful stop can be checked from outside.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from typing import Any

from gev_core import ConnectionClosed

_lock = threading.Lock()
_closed = 0


def _report() -> None:
    print(f"soak: on_close {_closed}", file=sys.stderr, flush=True)


def push_text(i: int) -> str:
    """The ``i``-th message of a ``pushes`` run: compressible, and different every time."""
    return f"push {i:06d} " + f"p{i % 11}-" * (i % 97)


def _push(conn: Any, count: int, seconds: float) -> None:
    interval = seconds / max(1, count)
    try:
        for i in range(count):
            conn.send(push_text(i))
            if interval > 0:
                time.sleep(interval)
    except ConnectionClosed:
        pass


class Echo:
    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        name = conn.protocol.name
        if name == "protobuf":
            return ctx, data
        if name == "websocket" and isinstance(data, str) and data[:7] == "pushes ":
            _, count, seconds = data.split()
            threading.Thread(
                target=_push, args=(conn, int(count), float(seconds)), daemon=True
            ).start()
            return None
        if name == "line" and data[:5] == b"push ":
            _, count, size = bytes(data).split()
            blob = b"p" * int(size)
            for _ in range(int(count)):
                conn.send(blob)
            return None
        return data

    def on_close(self, conn: Any) -> None:
        global _closed
        with _lock:
            if not _closed:
                # Registered by the server's first close, not on import: the soak client
                # imports this module too (push_text) and has nothing to report.
                atexit.register(_report)
            _closed += 1


echo = Echo()
