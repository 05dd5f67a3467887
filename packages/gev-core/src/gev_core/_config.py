"""What ``gev serve`` runs with: one configuration object, from the command line or from code.

:class:`ServeConfig` holds every setting of a served application -- the handler's
``MODULE:ATTR``, where to listen, the protocols, loops, workers and their timeouts, and the
options plugins added to ``gev serve`` -- and knows how to turn itself into what the parts need:
the listening socket (:meth:`ServeConfig.bind_socket`, through the one binder in ``_bind``), the
keyword arguments of :class:`~gev_core.Server`, the argument list each worker process gets. The
command line only parses into it; :func:`~gev_core._serve.serve` and the supervisor only read it.
"""

from __future__ import annotations

import importlib
import os
import socket
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

from ._bind import bind_socket, format_address, is_unix_address, parse_address
from ._errors import GevError
from ._sslcontext import VERIFY_CLIENT_MODES, server_context

__all__ = [
    "DEFAULT_ADDRESS",
    "PORT_SHARING_MODES",
    "ServeConfig",
    "StartupError",
    "default_port_sharing",
    "load_handler",
]

DEFAULT_ADDRESS = "127.0.0.1:1833"
#: Seconds a client gets to complete the TLS handshake before it is disconnected.
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 10.0
PORT_SHARING_MODES = ("auto", "reuse-port", "inherit")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class StartupError(GevError):
    """Serving could not start: ``gev serve`` prints ``gev: error: <message>`` and exits ``code``.

    ``code`` is 2 for a usage error (a bad ``MODULE:ATTR``, option value or protocol name), 1
    otherwise. With ``show_cause`` the exception that caused it (the application's own code
    raising) is printed with its traceback first.
    """

    def __init__(self, message: str, code: int = 1, *, show_cause: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.show_cause = show_cause


def default_port_sharing(address: str | tuple[str, int] = DEFAULT_ADDRESS) -> str:
    """How workers share ``address`` unless told: see ``_workers``.

    ``"reuse-port"`` for TCP on Linux, where the kernel balances ``SO_REUSEPORT`` listeners;
    ``"inherit"`` for Unix sockets (which cannot share a path) and on other systems (macOS and
    most BSDs accept the option but hand every connection to one listener).
    """
    if is_unix_address(address):
        return "inherit"
    if sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT"):
        return "reuse-port"
    return "inherit"


#: ``gev serve`` options that are :class:`~gev_core.Server` parameters for handlers that block
#: or await (``--offload-threads`` ...): taken from ``options`` when set.
OFFLOAD_OPTIONS = ("offload_threads", "offload_queue", "max_pending", "max_tasks", "asyncio_loop")


@dataclass
class ServeConfig:
    """Everything ``gev serve`` (and :func:`~gev_core.serve_workers`) serves with.

    :param app: the handler as ``"module:attr"`` (a handler class, instance or factory).
    :param address: where to listen (see :class:`~gev_core.Server`), ``"unix:/path"`` included.
    :param network: ``"tcp"``, ``"tcp4"``, ``"tcp6"`` or ``"unix"``.
    :param protocols: protocol names; several share the listener (first-bytes selection).
    :param loops: event loops per process.
    :param workers: worker processes under a supervisor; ``None`` serves in this process.
    :param port_sharing: ``"auto"``, ``"reuse-port"`` or ``"inherit"`` (see ``_workers``).
    :param reuse_port: set ``SO_REUSEPORT`` on a single process's listener.
    :param backlog: ``listen()`` backlog.
    :param unix_mode: permissions of a Unix socket file.
    :param graceful_timeout: seconds a stopping worker gets before it is killed.
    :param drain_timeout: seconds a worker replaced by a rolling restart keeps serving its open
        connections before it closes them.
    :param app_dir: directory searched first for the application's module.
    :param log_level: level of the ``gev`` logger.
    :param certfile: serve TLS with this certificate chain (PEM); see
        :func:`~gev_core.server_context` for this and the next four.
    :param keyfile: the certificate's private key (PEM), if not in ``certfile``.
    :param ca_certs: CA certificates (PEM file or hashed directory) for client certificates.
    :param verify_client: ``"none"``, ``"optional"`` or ``"required"`` (needs ``ca_certs``).
    :param alpn: ALPN protocol names to accept, in order of preference.
    :param tls_handshake_timeout: seconds a client gets to complete the TLS handshake.
    :param options: further options for plugins, as ``config.options`` shows them (the values
        ``gev serve`` parsed for plugin options).
    :param extra_args: further ``gev serve`` arguments for worker processes (plugin options).
    :param argv: the ``gev serve`` arguments as given on the command line; workers get them
        verbatim, so that plugin options keep their exact meaning. Built from the fields when
        ``None``.
    """

    app: str
    address: str | tuple[str, int] = DEFAULT_ADDRESS
    network: str = "tcp"
    protocols: list[str] = field(default_factory=list)
    loops: int = 1
    workers: int | None = None
    port_sharing: str = "auto"
    reuse_port: bool = False
    backlog: int = 1024
    unix_mode: int | None = None
    graceful_timeout: float = 10.0
    drain_timeout: float = 30.0
    app_dir: str | None = None
    log_level: str = "info"
    certfile: str | None = None
    keyfile: str | None = None
    ca_certs: str | None = None
    verify_client: str = "none"
    alpn: list[str] = field(default_factory=list)
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    options: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    argv: list[str] | None = None

    def __post_init__(self) -> None:
        if self.loops < 1:
            raise ValueError("loops must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.port_sharing not in PORT_SHARING_MODES:
            raise ValueError(f"port_sharing must be one of {PORT_SHARING_MODES}")
        if self.graceful_timeout < 0 or self.drain_timeout < 0:
            raise ValueError("graceful_timeout and drain_timeout must be >= 0")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {LOG_LEVELS}")
        parse_address(self.address, self.network)  # ValueError/OSError for a bad one
        if self.unix_mode is not None and not self.is_unix:
            raise ValueError("unix_mode applies to Unix socket addresses only")
        if self.is_unix and self.port_sharing == "reuse-port":
            raise ValueError(
                "workers cannot share a Unix socket with SO_REUSEPORT; use port sharing 'inherit'"
            )
        if self.port_sharing == "reuse-port" and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("SO_REUSEPORT is not supported on this platform; use 'inherit'")
        if self.certfile is None:
            given = [
                name
                for name, value in (
                    ("keyfile", self.keyfile),
                    ("ca_certs", self.ca_certs),
                    ("alpn", self.alpn),
                )
                if value
            ]
            if self.verify_client != "none":
                given.append("verify_client")
            if given:
                raise ValueError(f"{', '.join(given)} without certfile: TLS needs a certificate")
        if self.verify_client not in VERIFY_CLIENT_MODES:
            raise ValueError(f"verify_client must be one of {VERIFY_CLIENT_MODES}")
        if self.verify_client != "none" and self.ca_certs is None:
            raise ValueError("verify_client needs ca_certs (the CAs client certificates chain to)")
        if not self.tls_handshake_timeout > 0:
            raise ValueError("tls_handshake_timeout must be > 0 seconds")

    # ------------------------------------------------------------------ derived

    @property
    def is_unix(self) -> bool:
        return is_unix_address(self.address) or self.network == "unix"

    @property
    def tls(self) -> bool:
        """True when serving TLS (a certificate is configured)."""
        return self.certfile is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's ``ssl.SSLContext`` (``None`` for plaintext), built by
        :func:`~gev_core.server_context`.

        :raises ValueError: a file is missing or unreadable, or the key does not match.
        """
        if self.certfile is None:
            return None
        return server_context(
            self.certfile,
            self.keyfile,
            ca_certs=self.ca_certs,
            verify_client=self.verify_client,
            alpn=self.alpn or None,
        )

    @property
    def sharing(self) -> str:
        """The port sharing mode in effect (``"auto"`` resolved)."""
        if self.port_sharing == "auto":
            return default_port_sharing(self.address if not self.is_unix else "unix:")
        return self.port_sharing

    @property
    def display_address(self) -> str:
        """The address as ``--address`` takes it (before binding: port 0 stays 0)."""
        if isinstance(self.address, str):
            return self.address
        return format_address(self.address)

    def bind_socket(self, *, reuse_port: bool | None = None, listen: bool = True) -> socket.socket:
        """The listening socket (or, with ``listen=False``, bound only) for this configuration."""
        return bind_socket(
            self.address,
            network=self.network,
            reuse_port=self.reuse_port if reuse_port is None else reuse_port,
            backlog=self.backlog if listen else None,
            unix_mode=self.unix_mode,
        )

    def load_handler(self) -> Any:
        """Import the application and return its handler (see :func:`load_handler`)."""
        return load_handler(self.app, self.app_dir)

    def server_kwargs(self, worker_index: int | None = None) -> dict[str, Any]:
        """Keyword arguments of :class:`~gev_core.Server` for this configuration.

        ``options`` (what plugins see as ``config.options``) carries every setting, plugin
        options included, as the parsed command line had them, and the worker's identity:
        ``options["worker_index"]`` is ``worker_index`` (the slot of a supervised worker
        process, ``0`` to ``workers - 1``; ``None`` outside a supervisor), so that a plugin can
        tell the workers apart (a metrics label, a per-worker file).
        """
        kwargs: dict[str, Any] = {
            "address": self.address,
            "network": self.network,
            "num_loops": self.loops,
            "reuse_port": self.reuse_port,
            "backlog": self.backlog,
            "unix_mode": self.unix_mode,
        }
        if self.protocols:
            kwargs["protocol"] = self.protocols[0] if len(self.protocols) == 1 else self.protocols
        if self.certfile is not None:
            kwargs["ssl"] = self.ssl_context()
            kwargs["tls_handshake_timeout"] = self.tls_handshake_timeout
        for key in OFFLOAD_OPTIONS:
            value = self.options.get(key)
            if value is not None:
                kwargs[key] = value
        options: dict[str, Any] = {
            "app": self.app,
            "protocol": list(self.protocols) or None,
            "loops": self.loops,
            "workers": self.workers,
            "port_sharing": self.port_sharing,
            "graceful_timeout": self.graceful_timeout,
            "drain_timeout": self.drain_timeout,
            "app_dir": self.app_dir,
            "log_level": self.log_level,
            "certfile": self.certfile,
            "keyfile": self.keyfile,
            "ca_certs": self.ca_certs,
            "verify_client": self.verify_client,
            "alpn": list(self.alpn) or None,
            "tls_handshake_timeout": self.tls_handshake_timeout,
            **self.options,
            "address": self.display_address,
            "reuse_port": self.reuse_port,
            "worker_index": worker_index,
        }
        kwargs["options"] = options
        return kwargs

    def worker_args(self) -> list[str]:
        """The ``gev serve`` arguments of each worker process."""
        if self.argv is not None:
            return list(self.argv)
        args = [self.app, "--address", self.display_address, "--loops", str(self.loops)]
        args += ["--log-level", self.log_level, "--backlog", str(self.backlog)]
        args += ["--graceful-timeout", repr(self.graceful_timeout)]
        args += ["--drain-timeout", repr(self.drain_timeout)]
        for name in self.protocols:
            args += ["--protocol", name]
        if self.app_dir is not None:
            args += ["--app-dir", self.app_dir]
        if self.unix_mode is not None:
            args += ["--unix-mode", f"{self.unix_mode:o}"]
        if self.certfile is not None:
            args += ["--certfile", self.certfile]
            args += ["--tls-handshake-timeout", repr(self.tls_handshake_timeout)]
        if self.keyfile is not None:
            args += ["--keyfile", self.keyfile]
        if self.ca_certs is not None:
            args += ["--ca-certs", self.ca_certs]
        if self.verify_client == "required":
            args += ["--verify-client"]
        elif self.verify_client == "optional":
            args += ["--verify-client-optional"]
        if self.alpn:
            args += ["--alpn", ",".join(self.alpn)]
        return args + list(self.extra_args)


# ------------------------------------------------------------------------------ MODULE:ATTR


def _is_handler(obj: Any) -> bool:
    return callable(getattr(obj, "on_message", None))


def load_handler(spec: str, app_dir: str | None = None) -> Any:
    """The handler named by ``"module:attr"`` (``attr`` may be dotted), uvicorn-style.

    ``attr`` is a handler class (instantiated with no arguments), a handler instance (anything
    with ``on_message``) or a factory (a callable returning a handler). ``app_dir`` (default: the
    current directory) goes first on ``sys.path``, so a module next to the user is found even
    when ``gev`` runs as a console script, whose ``sys.path[0]`` is its own bin directory.

    :raises StartupError: code 2 for a malformed spec, a missing module or attribute, or an
        object that is not a handler; code 1 (with the cause's traceback to show) when the
        module or factory itself raises.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise StartupError(f"application {spec!r} must look like MODULE:ATTR (e.g. myapp:Echo)", 2)
    path = os.path.abspath(app_dir if app_dir is not None else os.curdir)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module itself (or a parent package) missing is a usage error; a missing
        # import inside the user's module is a bug in it and keeps its traceback.
        parts = module_name.split(".")
        if exc.name in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise StartupError(f"could not import module {module_name!r}: {exc}", 2) from None
        raise StartupError(
            f"importing module {module_name!r} failed: {exc}", show_cause=True
        ) from exc
    except Exception as exc:
        raise StartupError(
            f"importing module {module_name!r} failed: {exc!r}", show_cause=True
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise StartupError(f"module {module_name!r} has no attribute {attr!r}", 2) from None
    what = f"{spec!r}"
    if isinstance(obj, type):
        if not _is_handler(obj):
            raise StartupError(
                f"{what} is a class without an on_message(conn, ctx, data) method", 2
            )
        try:
            return obj()
        except Exception as exc:
            raise StartupError(f"instantiating {what} failed: {exc!r}", show_cause=True) from exc
    if _is_handler(obj):
        return obj
    if callable(obj):
        try:
            handler = obj()
        except Exception as exc:
            raise StartupError(
                f"calling the factory {what} failed: {exc!r}", show_cause=True
            ) from exc
        if not _is_handler(handler):
            raise StartupError(
                f"the factory {what} returned {type(handler).__name__}, not a handler with"
                " on_message(conn, ctx, data)",
                2,
            )
        return handler
    raise StartupError(
        f"{what} is a {type(obj).__name__}, not a handler class, handler instance or factory",
        2,
    )
