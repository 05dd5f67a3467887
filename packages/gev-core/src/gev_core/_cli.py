"""The ``gev`` command: ``gev serve``, ``gev plugins``, ``gev --version``.

Exit codes: 0 on a clean stop, 2 for usage errors (bad ``MODULE:ATTR``, unknown protocol, bad
option values), 1 for everything else (a plugin that fails to load, the address in use, an
exception in the application's own code).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import os
import re
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .__about__ import __version__
from ._errors import GevError
from ._plugins import GevPluginManager, PluginError, PluginInfo, ProtocolRegistry
from ._server import Server, parse_address
from ._workers import format_address

logger = logging.getLogger("gev")

__all__ = ["load_handler", "main"]

DEFAULT_ADDRESS = "127.0.0.1:1833"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_COMMANDS_WITH_PLUGINS = ("serve", "plugins")


class CliError(Exception):
    """Ends the command with ``gev: error: <message>`` on stderr and ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _UserCodeError(CliError):
    """The application's own code raised: its traceback is worth more than a one-liner."""


# ------------------------------------------------------------------------------ MODULE:ATTR


def _is_handler(obj: Any) -> bool:
    return callable(getattr(obj, "on_message", None))


def load_handler(spec: str, app_dir: str | None = None) -> Any:
    """The handler named by ``"module:attr"`` (``attr`` may be dotted), uvicorn-style.

    ``attr`` is a handler class (instantiated with no arguments), a handler instance (anything
    with ``on_message``) or a factory (a callable returning a handler). ``app_dir`` (default: the
    current directory) goes first on ``sys.path``, so a module next to the user is found even
    when ``gev`` runs as a console script, whose ``sys.path[0]`` is its own bin directory.

    :raises CliError: code 2 for a malformed spec, a missing module or attribute, or an object
        that is not a handler; code 1 (with a traceback to print) when the module or factory
        itself raises.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"application {spec!r} must look like MODULE:ATTR (e.g. myapp:Echo)", 2)
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
            raise CliError(f"could not import module {module_name!r}: {exc}", 2) from None
        raise _UserCodeError(f"importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise _UserCodeError(f"importing module {module_name!r} failed: {exc!r}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}", 2) from None
    what = f"{spec!r}"
    if isinstance(obj, type):
        if not _is_handler(obj):
            raise CliError(f"{what} is a class without an on_message(conn, ctx, data) method", 2)
        try:
            return obj()
        except Exception as exc:
            raise _UserCodeError(f"instantiating {what} failed: {exc!r}") from exc
    if _is_handler(obj):
        return obj
    if callable(obj):
        try:
            handler = obj()
        except Exception as exc:
            raise _UserCodeError(f"calling the factory {what} failed: {exc!r}") from exc
        if not _is_handler(handler):
            raise CliError(
                f"the factory {what} returned {type(handler).__name__}, not a handler with"
                " on_message(conn, ctx, data)",
                2,
            )
        return handler
    raise CliError(
        f"{what} is a {type(obj).__name__}, not a handler class, handler instance or factory",
        2,
    )


# ---------------------------------------------------------------------------------- parsing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help=kwargs.get("help"))

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        for name, version in installed_gev_packages():
            print(f"{name} {version}")
        parser.exit(0)


def installed_gev_packages() -> list[tuple[str, str]]:
    """``(distribution, version)`` of every ``gev-*`` distribution, gev-core first.

    gev-core's version is the one of the code running, which may be a source tree on
    ``PYTHONPATH`` with no distribution metadata at all.
    """
    found = {"gev-core": __version__}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.name or "").lower()
        if name.startswith("gev-") and name not in found:
            found[name] = dist.version
    return sorted(found.items(), key=lambda item: (item[0] != "gev-core", item[0]))


def build_parser(pm: GevPluginManager | None) -> argparse.ArgumentParser:
    """The ``gev`` parser; ``gev serve`` gets the plugins' options when ``pm`` is given."""
    parser = argparse.ArgumentParser(
        prog="gev", description="gev for Python: a fast, non-blocking TCP server."
    )
    parser.add_argument(
        "-V", "--version", action=_VersionAction, help="show the installed gev packages and exit"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve a handler",
        description="Serve the handler named by MODULE:ATTR (a Handler class, instance or"
        " factory). SIGTERM or SIGINT stop it gracefully.",
        # Workers get the supervisor's arguments verbatim: no prefix guessing that a hidden or
        # plugin option could change the meaning of.
        allow_abbrev=False,
    )
    serve.add_argument("app", metavar="MODULE:ATTR", help="the handler, e.g. myapp:Echo")
    serve.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"where to listen: HOST:PORT, :PORT (all interfaces) or [V6]:PORT"
        f" (default {DEFAULT_ADDRESS})",
    )
    serve.add_argument(
        "--protocol",
        action="append",
        default=None,
        metavar="NAME",
        help="protocol name (see 'gev plugins'); repeat it or give a comma list to serve several"
        " protocols on one port (default: default)",
    )
    serve.add_argument(
        "--loops", type=_positive_int, default=1, metavar="N", help="event loops (default 1)"
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="M",
        help="run M worker processes sharing the port, under a supervisor that restarts them",
    )
    serve.add_argument(
        "--port-sharing",
        choices=["auto", "reuse-port", "inherit"],
        default="auto",
        help="how workers share the port: each binds it with SO_REUSEPORT (Linux default) or"
        " they all poll one listener inherited from the supervisor (default auto)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="with --workers: kill workers that have not stopped this long after SIGTERM"
        " (default 10)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="set SO_REUSEPORT, so that other processes can listen on the same port",
    )
    serve.add_argument(
        "--app-dir",
        default=None,
        metavar="DIR",
        help="look for MODULE in DIR first (default: the current directory)",
    )
    serve.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="level of the gev logger"
    )
    # Internal: how the supervisor tells a process that it is worker N and what to serve on.
    for flag in ("--worker-of", "--worker-index", "--worker-control-fd", "--worker-fd"):
        serve.add_argument(
            flag, dest="_" + flag[2:].replace("-", "_"), type=int, help=argparse.SUPPRESS
        )
    serve.add_argument("--worker-address", dest="_worker_address", help=argparse.SUPPRESS)
    if pm is not None:
        try:
            pm.hook.gev_addoption(parser=serve)
        except Exception as exc:
            raise CliError(f"a plugin failed to add its options to gev serve: {exc}") from exc

    plugins = commands.add_parser(
        "plugins",
        help="list the plugins and the protocols they provide",
        description="List every gev plugin found (built-in and entry points), with its"
        " distribution, the hooks it implements and the protocols it registers.",
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _configure_logging(level: str) -> None:
    log = logging.getLogger("gev")
    log.setLevel(level.upper())
    if not any(isinstance(h, _CliLogHandler) for h in log.handlers):
        handler = _CliLogHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
        )
        log.addHandler(handler)
    # The application may configure the root logger too; propagating would print twice.
    log.propagate = False


class _CliLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    pass


# ---------------------------------------------------------------------------------- serve


def _protocol_names(values: list[str] | None) -> list[str]:
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def _serve(args: argparse.Namespace, pm: GevPluginManager, serve_argv: list[str]) -> int:
    _configure_logging(args.log_level)
    worker_of: int | None = args._worker_of
    names = _protocol_names(args.protocol)
    registry = ProtocolRegistry(pm)  # PluginError (plugins contradict each other): exit 1
    for name in names:
        try:
            registry.get(name)
        except PluginError as exc:
            raise CliError(str(exc), 2) from None
    try:
        parse_address(args.address)
    except (ValueError, OSError) as exc:
        raise CliError(f"bad --address {args.address!r}: {exc}", 2) from None

    if args.workers is not None and worker_of is None:
        from ._workers import Supervisor

        supervisor = Supervisor(
            serve_argv,
            args.workers,
            address=args.address,
            port_sharing=args.port_sharing,
            graceful_timeout=args.graceful_timeout,
        )
        try:
            return supervisor.run()
        except OSError as exc:
            raise CliError(f"cannot listen on {args.address}: {exc}") from None

    done = threading.Event()
    if worker_of is not None:
        from ._workers import prepare_worker

        if not prepare_worker(worker_of):
            logger.warning("supervisor (pid %d) is gone before this worker started", worker_of)
            return 1

    early = _EarlyStop()
    restore = early.install()
    try:
        return _run_server(args, pm, names, worker_of, early, done)
    finally:
        restore()


class _EarlyStop:
    """SIGINT/SIGTERM before ``Server.start`` has installed its own handlers.

    The port is bound (and a client may already connect) before ``start`` takes over the
    signals; without this a signal in that window kills the process without ``on_close``. The
    handler stops the server only once :func:`_run_server` is about to start it, so that
    ``stop`` never runs twice on a server that never started.
    """

    def __init__(self) -> None:
        self.requested = False
        self.server: Server | None = None

    def install(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        import signal

        def on_signal(signum: int, frame: Any) -> None:
            logger.info("received %s; stopping", signal.Signals(signum).name)
            self.requested = True
            if self.server is not None:
                self.server.stop(wait=False)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, old in previous.items():
                if old is not None:
                    signal.signal(sig, old)

        return restore


def _run_server(
    args: argparse.Namespace,
    pm: GevPluginManager,
    names: list[str],
    worker_of: int | None,
    early: _EarlyStop,
    done: threading.Event,
) -> int:
    handler = load_handler(args.app, args.app_dir)
    address: str = args.address
    kwargs: dict[str, Any] = {"num_loops": args.loops, "reuse_port": args.reuse_port}
    listen_later: socket.socket | None = None
    try:
        if worker_of is not None:
            from ._workers import bind_socket

            if args._worker_fd is not None:
                kwargs["sock"] = socket.socket(fileno=args._worker_fd)
            else:
                # Bound now, listening only at the supervisor's go (see _workers).
                address = args._worker_address
                kwargs["reuse_port"] = True
                kwargs["sock"] = listen_later = bind_socket(address, reuse_port=True)
        if names:
            kwargs["protocol"] = names[0] if len(names) == 1 else names
        if getattr(args, "idle_time", None) is not None:  # a timer plugin's gev_addoption
            kwargs["idle_time"] = args.idle_time
        options = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        options.update(address=address, reuse_port=kwargs["reuse_port"])
        server = Server(handler, address=address, plugins=pm, options=options, **kwargs)
    except OSError as exc:
        raise CliError(f"cannot listen on {address}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), 2) from None
    except GevError as exc:
        raise CliError(str(exc)) from None

    host_port = format_address(server.address)
    if worker_of is not None:
        from ._workers import BACKLOG, wait_for_go, watch_parent

        if args._worker_control_fd is not None and not wait_for_go(
            args._worker_control_fd, lambda: early.requested
        ):
            return 0  # stopped before serving: nothing to drain, the exit closes the rest
        if listen_later is not None:
            listen_later.listen(BACKLOG)
        logger.info("worker %s serving %s on %s", args._worker_index, args.app, host_port)
        watch_parent(worker_of, lambda: server.stop(wait=False), done)
    else:
        logger.info(
            "serving %s on %s (%d loop%s, protocol %s); Ctrl-C to stop",
            args.app,
            host_port,
            args.loops,
            "" if args.loops == 1 else "s",
            server.protocol.name,
        )
    # Assigned before the check: a signal after it stops the server (and start() refuses to
    # run), a signal before it is seen by the check.
    early.server = server
    if early.requested:
        return 0
    try:
        server.start()
    except RuntimeError:
        if not early.requested:
            raise
    finally:
        done.set()
    logger.info("stopped")
    return 0


# -------------------------------------------------------------------------------- plugins


def _plugin_record(info: PluginInfo, registry: ProtocolRegistry) -> dict[str, Any]:
    builtin = info.entry_point is None and info.distribution is None
    return {
        "name": info.name,
        "distribution": "gev-core" if builtin else info.distribution,
        "version": __version__ if builtin else info.version,
        "entry_point": info.entry_point,
        "builtin": builtin,
        "hooks": info.hooks,
        "protocols": [n for n in registry.names() if registry.provider(n).name == info.name],
    }


def _plugins(args: argparse.Namespace, pm: GevPluginManager) -> int:
    registry = ProtocolRegistry(pm)
    infos = dict(pm.infos)
    for name, plugin in pm.list_name_plugin():  # registered by other means than entry points
        if name not in infos and plugin is not None:
            infos[name] = pm.info_for(plugin)
    records = [_plugin_record(info, registry) for info in infos.values()]
    protocols = [
        {
            "name": name,
            "plugin": registry.provider(name).name,
            "class": f"{registry.get(name).__module__}.{registry.get(name).__qualname__}",
        }
        for name in registry.names()
    ]
    if args.json:
        print(json.dumps({"plugins": records, "protocols": protocols}, indent=2))
        return 0
    print(f"plugins ({len(records)}):")
    for r in records:
        origin = "built in" if r["builtin"] else f"entry point {r['entry_point']}"
        print(f"  {r['name']}  {r['distribution']} {r['version']}  ({origin})")
        print(f"    hooks:     {', '.join(r['hooks']) or '-'}")
        print(f"    protocols: {', '.join(r['protocols']) or '-'}")
    print(f"protocols ({len(protocols)}):")
    width = max((len(p["name"]) for p in protocols), default=0)
    for p in protocols:
        print(f"  {p['name']:<{width}}  {p['class']}  (plugin {p['plugin']})")
    return 0


# ----------------------------------------------------------------------------------- main


def _command(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gev`` command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = _command(args_list)
    try:
        pm = None
        if command in _COMMANDS_WITH_PLUGINS:
            # Before the parser exists: plugins add options to gev serve. A plugin that fails to
            # import stops here with PluginError, which names it and its distribution.
            from ._plugins import get_plugin_manager

            pm = get_plugin_manager()
        parser = build_parser(pm)
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help, --version, usage errors: argparse has printed
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        assert pm is not None
        if args.command == "plugins":
            return _plugins(args, pm)
        serve_argv = args_list[args_list.index("serve") + 1 :]
        return _serve(args, pm, serve_argv)
    except _UserCodeError as exc:
        if exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        print(f"gev: error: {exc}", file=sys.stderr)
        return exc.code
    except CliError as exc:
        print(f"gev: error: {exc}", file=sys.stderr)
        return exc.code
    except PluginError as exc:
        print(f"gev: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while starting up, before any handler is installed
        return 130
