"""The Python side of the docs tests (see tests/snippets.py): runs a page's Python blocks.

Reads one JSON request per line on stdin and answers with a line ``@@snippet {json}`` on stdout.

* ``{"op": "ports", "ports": [...]}`` -- the page's documented ports (after substitution).
* ``{"op": "exec", "code", "where", "doctest", "timeout"}`` -- run a block in the page's
  namespace, in a thread of its own. Answers once the block has returned (``done``), or once it
  is blocked but listening on a documented port (``serving``: a server's ``start()``), or with
  ``error``: an exception, an ERROR log record, a listening socket on another port, a time-out.
* ``{"op": "stop"}`` -- end of a section: ``stop()`` every running gev server, wait for the
  blocks that were serving to return, report what went wrong.
"""

from __future__ import annotations

import contextlib
import doctest
import errno
import gc
import io
import json
import logging
import os
import sys
import threading
import time
import traceback
import weakref
from typing import Any

NAMESPACE: dict[str, Any] = {"__name__": "__main__"}
_PROXIES = (weakref.ProxyType, weakref.CallableProxyType)
DOC_PORTS: set[int] = set()
RUNNING: list[tuple[str, threading.Thread, list[BaseException]]] = []


class _Capture(io.TextIOBase):
    """sys.stdout for the page: what blocks print, from any thread."""

    def __init__(self) -> None:
        self.buf = io.StringIO()
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        with self.lock:
            return self.buf.write(s)

    def take(self) -> str:
        with self.lock:
            text = self.buf.getvalue()
            self.buf = io.StringIO()
            return text


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


PROTOCOL = sys.stdout
CAPTURE = _Capture()
ERRORS = _Errors()
ERRORS.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
logging.getLogger().addHandler(ERRORS)


def reply(**fields: Any) -> None:
    PROTOCOL.write("@@snippet " + json.dumps(fields) + "\n")
    PROTOCOL.flush()


def listening_ports() -> set[int]:
    """TCP ports this process listens on (Linux /proc; empty elsewhere)."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def run_code(code: str, where: str, as_doctest: bool) -> None:
    if as_doctest:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(code, NAMESPACE, where, where, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        out = io.StringIO()
        runner.run(test, out=out.write, clear_globs=False)
        if runner.failures:
            raise AssertionError("doctest failed:\n" + out.getvalue())
        return
    exec(compile(code, where, "exec"), NAMESPACE)


def op_exec(req: dict[str, Any]) -> None:
    errors: list[BaseException] = []
    ERRORS.records.clear()
    before = listening_ports()

    def target() -> None:
        try:
            run_code(req["code"], req["where"], req["doctest"])
        except BaseException as exc:  # reported to the test
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"snippet {req['where']}", daemon=True)
    thread.start()
    deadline = time.monotonic() + req["timeout"]
    status = "timeout"
    while time.monotonic() < deadline:
        thread.join(0.05)
        if not thread.is_alive():
            status = "done"
            break
        new = listening_ports() - before
        if new & DOC_PORTS:
            time.sleep(0.2)  # let start() settle, then report it serving
            status = "serving"
            RUNNING.append((req["where"], thread, errors))
            break
    stdout = CAPTURE.take()
    problems = []
    if errors:
        problems.append("".join(traceback.format_exception(errors[0])))
        if isinstance(errors[0], OSError) and errors[0].errno == errno.EADDRINUSE:
            problems.append("an earlier block of the page serves this port: use another one")
    if status == "timeout":
        problems.append(
            f"neither finished nor listened on a documented port within {req['timeout']:.0f} s"
        )
    stray = listening_ports() - DOC_PORTS
    if stray:
        problems.append(
            f"listening on port(s) {sorted(stray)}, not documented ports: give servers an explicit"
            " address with one of the documented ports (see tests/snippets.py)"
        )
    if ERRORS.records:
        problems.append("logged at ERROR:\n" + "\n".join(ERRORS.records))
    if problems:
        reply(status="error", error="\n".join(problems), stdout=stdout)
    else:
        reply(status=status, stdout=stdout)


def op_stop() -> None:
    problems = []
    try:
        from gev_core import Server
    except ImportError:
        Server = None  # type: ignore[assignment,misc]
    if Server is not None:
        servers = []
        for obj in gc.get_objects():
            try:
                if type(obj) in _PROXIES or not isinstance(obj, Server):
                    continue
            except ReferenceError:
                continue
            if obj._started.is_set() and not obj._stopped.is_set():
                servers.append(obj)
        for server in servers:
            try:
                server.stop(timeout=5)
            except Exception:
                problems.append("Server.stop() failed:\n" + traceback.format_exc())
    for where, thread, errors in RUNNING:
        thread.join(30)
        if thread.is_alive():
            problems.append(f"{where}: still running 30 s after its servers were stopped")
        elif errors:
            problems.append(f"{where}: " + "".join(traceback.format_exception(errors[0])))
    RUNNING.clear()
    left = listening_ports() & DOC_PORTS
    if left:
        problems.append(f"still listening on {sorted(left)} after the section's servers stopped")
    if ERRORS.records:
        problems.append("logged at ERROR:\n" + "\n".join(ERRORS.records))
        ERRORS.records.clear()
    CAPTURE.take()
    if problems:
        reply(status="error", error="\n".join(problems))
    else:
        reply(status="ok")


def main() -> None:
    sys.path.insert(0, os.getcwd())
    sys.stdout = CAPTURE  # type: ignore[assignment]
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "ports":
                DOC_PORTS.update(req["ports"])
                reply(status="ok")
            elif req["op"] == "exec":
                op_exec(req)
            elif req["op"] == "stop":
                op_stop()
        except Exception:
            reply(status="error", error="the docs test harness failed:\n" + traceback.format_exc())


if __name__ == "__main__":
    main()
