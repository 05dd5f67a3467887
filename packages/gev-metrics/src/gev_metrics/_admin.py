"""The admin endpoint: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for probes.

A small threaded WSGI server (``wsgiref``) on its own address, in daemon threads of the process
it reports on -- never on the server's loops, so a scrape costs the loops nothing and a stuck
loop does not take the health endpoint with it. ``/metrics`` is prometheus_client's own WSGI
application (content negotiation for OpenMetrics, gzip, ``?name[]=`` filtering).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["AdminServer", "parse_admin_address"]

logger = logging.getLogger("gev.metrics")


def parse_admin_address(address: str) -> tuple[str, int]:
    """``"host:port"``, ``":port"`` (all interfaces) or ``"[v6]:port"`` as ``(host, port)``.

    :raises ValueError: anything else.
    """
    host, sep, port_s = address.rpartition(":")
    if not sep or not port_s.isdigit() or int(port_s) > 65535:
        raise ValueError(f"metrics address {address!r} must look like HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port_s)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # One line per scrape or probe is noise; failures are answered with their status.
        pass


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


class AdminServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``address`` until :meth:`close`.

    :param address: ``"host:port"`` (port 0 picks a free one: read :attr:`address`).
    :param registry: what ``/metrics`` exports.
    :param ready: readiness for ``/readyz`` (``Server.ready``, ``Supervisor.ready``): 200
        while it returns True, 503 otherwise.
    :param before_scrape: called before each ``/metrics`` answer (to sample counters).
    :raises OSError: the address cannot be bound.
    """

    def __init__(
        self,
        address: str,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        *,
        before_scrape: Callable[[], None] | None = None,
    ) -> None:
        host, port = parse_admin_address(address)
        self._metrics_app = make_wsgi_app(registry)
        self._ready = ready
        self._before_scrape = before_scrape
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_AdminServer", (_Server,), {"address_family": family})
        self._server: WSGIServer = make_server(
            host, port, self._app, server_class=server_class, handler_class=_QuietHandler
        )
        name: Any = self._server.socket.getsockname()
        #: The bound ``(host, port)``.
        self.address: tuple[str, int] = (name[0], name[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="gev-metrics-admin",
            daemon=True,
        )
        self._thread.start()
        host_text = f"[{name[0]}]" if ":" in name[0] else name[0]
        #: ``http://host:port``.
        self.url = f"http://{host_text}:{name[1]}"
        logger.info("metrics and health on %s (/metrics, /healthz, /readyz)", self.url)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            if self._before_scrape is not None:
                try:
                    self._before_scrape()
                except Exception:
                    logger.exception("sampling the counters before a scrape failed")
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            try:
                ready = bool(self._ready())
            except Exception:
                logger.exception("the readiness check failed")
                ready = False
            if ready:
                return _text(start_response, "200 OK", "ready\n")
            return _text(start_response, "503 Service Unavailable", "not ready\n")
        return _text(
            start_response, "404 Not Found", "not found: try /metrics, /healthz, /readyz\n"
        )

    def close(self) -> None:
        """Stop serving and release the address. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
