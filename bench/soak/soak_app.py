"""The application the soak runs under ``gev serve``: one handler for every protocol.

* Echo: bytes back as they came (default, line, length-field), ``(type name, payload)`` back
  for protobuf, text as text and binary as binary for WebSocket.
* ``push COUNT SIZE`` (line protocol): the server sends COUNT messages of SIZE bytes, the way a
  push gateway does, whether or not the client reads them (the slow-reader scenario).
* ``on_close`` counts closed connections; the count is printed to stderr when the process
  exits (``soak: on_close COUNT``), so a graceful stop can be checked from outside.
"""

from __future__ import annotations

import atexit
import sys
import threading
from typing import Any

_lock = threading.Lock()
_closed = 0


def _report() -> None:
    print(f"soak: on_close {_closed}", file=sys.stderr, flush=True)


atexit.register(_report)


class Echo:
    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        name = conn.protocol.name
        if name == "protobuf":
            return ctx, data
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
            _closed += 1


echo = Echo()
