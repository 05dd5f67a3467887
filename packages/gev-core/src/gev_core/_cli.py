"""The ``gev`` command: ``gev serve``, ``gev plugins``, ``gev --version``.

This module parses and dispatches, nothing more: ``gev serve`` becomes a
:class:`~gev_core._config.ServeConfig` run by :func:`~gev_core._serve.serve`; ``gev plugins``
prints what the plugin manager found.

Exit codes: 0 on a clean stop, 2 for usage errors (bad ``MODULE:ATTR``, unknown protocol, bad
option values), 1 for everything else (a plugin that fails to load, the address in use, an
exception in the application's own code).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import io
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from .__about__ import __version__
from ._config import (
    DEFAULT_ADDRESS,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    LOG_LEVELS,
    PORT_SHARING_MODES,
    ServeConfig,
    StartupError,
    load_handler,
)
from ._plugins import GevPluginManager, PluginError, PluginInfo, ProtocolRegistry
from ._serve import WorkerArgs, serve

logger = logging.getLogger("gev")

__all__ = ["build_parser", "load_handler", "main"]

#: Exit status of a command whose output pipe was closed early (``gev plugins | head``), as a
#: shell reports a process killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13


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


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _file_mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid octal file mode: {text!r}") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"file mode out of range: {text!r}")
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
        for line in version_lines():
            print(line)
        parser.exit(0)


def version_lines() -> list[str]:
    """What ``gev --version`` prints: ``"<distribution> <version> (compiled|pure)"`` per package.

    The build is left out for a package without a ``COMPILED`` flag (see ``package_build``).
    """
    lines = []
    for name, version in installed_gev_packages():
        build = package_build(name)
        lines.append(f"{name} {version}" + (f" ({build})" if build else ""))
    return lines


def package_build(distribution: str) -> str:
    """``"compiled"`` or ``"pure"`` for a gev package with a ``COMPILED`` flag, else ``""``."""
    try:
        module = importlib.import_module(distribution.replace("-", "_"))
    except Exception:  # not importable here (another Python's install): nothing to tell
        return ""
    flag = getattr(module, "COMPILED", None)
    if not isinstance(flag, bool):
        return ""
    return "compiled" if flag else "pure"


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

    serve_parser = commands.add_parser(
        "serve",
        help="serve a handler",
        description="Serve the handler named by MODULE:ATTR (a Handler class, instance or"
        " factory). SIGTERM or SIGINT stop it gracefully; with --workers, SIGHUP replaces the"
        " workers one by one (a rolling restart that loads new code).",
        # Workers get the supervisor's arguments verbatim: no prefix guessing that a hidden or
        # plugin option could change the meaning of.
        allow_abbrev=False,
    )
    _add_serve_options(serve_parser)
    if pm is not None:
        try:
            pm.hook.gev_addoption(parser=serve_parser)
        except Exception as exc:
            raise StartupError(f"a plugin failed to add its options to gev serve: {exc}") from exc

    plugins = commands.add_parser(
        "plugins",
        help="list the plugins and the protocols they provide",
        description="List every gev plugin found (built-in and entry points), with its"
        " distribution, the hooks it implements and the protocols it registers. A plugin that"
        " fails to load is listed as broken, with its error.",
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("app", metavar="MODULE:ATTR", help="the handler, e.g. myapp:Echo")
    serve.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        metavar="ADDRESS",
        help="where to listen: HOST:PORT, :PORT (all interfaces), [V6]:PORT, unix:/PATH or"
        f" (Linux) unix:@NAME (default {DEFAULT_ADDRESS})",
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
        help="run M worker processes sharing the address, under a supervisor that restarts"
        " them; SIGHUP to the supervisor replaces them one by one without dropping connections",
    )
    serve.add_argument(
        "--port-sharing",
        choices=PORT_SHARING_MODES,
        default="auto",
        help="how workers share the address: one SO_REUSEPORT listener per worker (Linux TCP"
        " default) or one listener all workers poll (Unix sockets, other systems); the"
        " supervisor owns the listeners either way (default auto)",
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
        "--drain-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="with --workers: how long a worker replaced by SIGHUP keeps serving its open"
        " connections before it closes them (default 30)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="set SO_REUSEPORT, so that other processes can listen on the same port",
    )
    serve.add_argument(
        "--backlog", type=_positive_int, default=1024, metavar="N", help="listen() backlog"
    )
    serve.add_argument(
        "--unix-mode",
        type=_file_mode,
        default=None,
        metavar="MODE",
        help="permissions of the unix: socket file, in octal (e.g. 660; default: the umask's)",
    )
    offload = serve.add_argument_group(
        "handlers that block or await",
        "conn.offload() and async def callbacks (see the Server's parameters)",
    )
    offload.add_argument(
        "--offload-threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="threads of the offload pool (default: min(32, CPUs + 4))",
    )
    offload.add_argument(
        "--offload-queue",
        type=_positive_int,
        default=None,
        metavar="N",
        help="jobs waiting for an offload thread, server-wide (default 1024)",
    )
    offload.add_argument(
        "--max-pending",
        type=_positive_int,
        default=None,
        metavar="N",
        help="replies one connection may owe before it stops reading (default 32)",
    )
    offload.add_argument(
        "--max-tasks",
        type=_positive_int,
        default=None,
        metavar="N",
        help="coroutines running at once on the asyncio companion (default 10000)",
    )
    offload.add_argument(
        "--asyncio-loop",
        choices=("auto", "asyncio", "uvloop"),
        default=None,
        help="the asyncio companion's event loop (default auto: uvloop when installed)",
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
    tls = serve.add_argument_group(
        "TLS", "Serve TLS (and wss:// for WebSocket) on the address: give --certfile."
    )
    tls.add_argument(
        "--certfile",
        default=None,
        metavar="PEM",
        help="the server's certificate, then its intermediate CA certificates (PEM); the"
        " private key too unless --keyfile is given",
    )
    tls.add_argument("--keyfile", default=None, metavar="PEM", help="the private key (PEM)")
    tls.add_argument(
        "--ca-certs",
        default=None,
        metavar="PEM|DIR",
        help="CA certificates that client certificates must chain to (a PEM file or an OpenSSL"
        " hashed directory)",
    )
    verify = tls.add_mutually_exclusive_group()
    verify.add_argument(
        "--verify-client",
        dest="verify_client",
        action="store_const",
        const="required",
        default="none",
        help="require a client certificate signed by --ca-certs (mutual TLS)",
    )
    verify.add_argument(
        "--verify-client-optional",
        dest="verify_client",
        action="store_const",
        const="optional",
        help="ask for a client certificate and verify it against --ca-certs when one is sent",
    )
    tls.add_argument(
        "--alpn",
        action="append",
        default=None,
        metavar="NAMES",
        help="ALPN protocols to accept, in order of preference: a comma list or repeated"
        " (e.g. http/1.1)",
    )
    tls.add_argument(
        "--tls-handshake-timeout",
        type=_positive_seconds,
        default=DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="disconnect clients that have not completed the TLS handshake after this long"
        f" (default {DEFAULT_TLS_HANDSHAKE_TIMEOUT:g})",
    )
    # Internal: how the supervisor tells a process that it is worker N and what to serve on.
    for flag in ("--worker-of", "--worker-index", "--worker-control-fd", "--worker-fd"):
        serve.add_argument(
            flag, dest="_" + flag[2:].replace("-", "_"), type=int, help=argparse.SUPPRESS
        )


_CORE_OPTIONS = frozenset(
    {
        "command",
        "app",
        "address",
        "protocol",
        "loops",
        "workers",
        "port_sharing",
        "graceful_timeout",
        "drain_timeout",
        "reuse_port",
        "backlog",
        "unix_mode",
        "app_dir",
        "log_level",
        "certfile",
        "keyfile",
        "ca_certs",
        "verify_client",
        "alpn",
        "tls_handshake_timeout",
    }
)


def _protocol_names(values: list[str] | None) -> list[str]:
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def config_from_args(args: argparse.Namespace, argv: list[str]) -> ServeConfig:
    """The :class:`ServeConfig` of a parsed ``gev serve`` command line (``argv``: its arguments).

    :raises StartupError: (code 2) for an option value the parser could not judge alone.
    """
    try:
        return ServeConfig(
            args.app,
            address=args.address,
            protocols=_protocol_names(args.protocol),
            loops=args.loops,
            workers=args.workers,
            port_sharing=args.port_sharing,
            reuse_port=args.reuse_port,
            backlog=args.backlog,
            unix_mode=args.unix_mode,
            graceful_timeout=args.graceful_timeout,
            drain_timeout=args.drain_timeout,
            app_dir=args.app_dir,
            log_level=args.log_level,
            certfile=args.certfile,
            keyfile=args.keyfile,
            ca_certs=args.ca_certs,
            verify_client=args.verify_client,
            alpn=_protocol_names(args.alpn),
            tls_handshake_timeout=args.tls_handshake_timeout,
            options={
                k: v
                for k, v in vars(args).items()
                if not k.startswith("_") and k not in _CORE_OPTIONS
            },
            argv=argv,
        )
    except (ValueError, OSError) as exc:
        raise StartupError(f"bad --address {args.address!r} or option: {exc}", 2) from None


def plugin_options(pm: GevPluginManager, extra_args: Sequence[str]) -> dict[str, Any]:
    """The plugin options ``gev serve`` would parse from ``extra_args`` (``config.options``).

    For :func:`~gev_core.serve_workers`, which takes plugin options as command-line arguments:
    the supervisor's plugins need their values the way ``gev serve`` gives them.

    :raises ValueError: ``extra_args`` are not valid ``gev serve`` options (the parser's
        message says which).
    """
    parser = build_parser(pm)
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            args = parser.parse_args(["serve", "app:app", *extra_args])
    except SystemExit:
        lines = usage.getvalue().strip().splitlines()
        reason = lines[-1].split("error: ", 1)[-1] if lines else "not gev serve options"
        raise ValueError(f"extra_args {list(extra_args)!r}: {reason}") from None
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in _CORE_OPTIONS}


def _worker_args(args: argparse.Namespace) -> WorkerArgs | None:
    if args._worker_of is None:
        return None
    return WorkerArgs(args._worker_of, args._worker_index, args._worker_control_fd, args._worker_fd)


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


def _serve(args: argparse.Namespace, pm: GevPluginManager, argv: list[str]) -> int:
    _configure_logging(args.log_level)
    config = config_from_args(args, argv)
    registry = ProtocolRegistry(pm)  # PluginError (plugins contradict each other): exit 1
    for name in config.protocols:
        try:
            registry.get(name)
        except PluginError as exc:
            raise StartupError(str(exc), 2) from None
    return serve(config, pm, _worker_args(args))


# -------------------------------------------------------------------------------- plugins


def _plugin_record(info: PluginInfo, registry: ProtocolRegistry) -> dict[str, Any]:
    builtin = info.entry_point is None and info.distribution is None
    error = info.error or registry.errors.get(info.name)
    return {
        "name": info.name,
        "distribution": "gev-core" if builtin else info.distribution,
        "version": __version__ if builtin else info.version,
        "build": package_build("gev-core" if builtin else info.distribution or ""),
        "entry_point": info.entry_point,
        "builtin": builtin,
        "broken": error is not None,
        "error": error,
        "hooks": info.hooks,
        "protocols": [n for n in registry.names() if registry.provider(n).name == info.name],
    }


def _plugins(args: argparse.Namespace, pm: GevPluginManager) -> int:
    registry = ProtocolRegistry(pm, strict=False)
    infos = dict(pm.infos)
    for name, plugin in pm.list_name_plugin():  # registered by other means than entry points
        if name not in infos and plugin is not None:
            infos[name] = pm.info_for(plugin)
    infos.update(pm.broken)
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
    else:
        _print_plugins(records, protocols)
    broken = [r["name"] for r in records if r["broken"]]
    if broken:
        print(
            f"gev: warning: {len(broken)} broken plugin(s): {', '.join(broken)}; gev serve"
            " refuses to start until they are fixed, uninstalled or blocked with"
            f" GEV_DISABLED_PLUGINS={','.join(broken)}",
            file=sys.stderr,
        )
    return 0


def _print_plugins(records: list[dict[str, Any]], protocols: list[dict[str, Any]]) -> None:
    print(f"plugins ({len(records)}):")
    for r in records:
        origin = "built in" if r["builtin"] else f"entry point {r['entry_point']}"
        state = "  BROKEN" if r["broken"] else ""
        build = f", {r['build']}" if r["build"] else ""
        print(f"  {r['name']}  {r['distribution']} {r['version']}  ({origin}{build}){state}")
        if r["broken"]:
            print(f"    error:     {r['error']}")
        print(f"    hooks:     {', '.join(r['hooks']) or '-'}")
        print(f"    protocols: {', '.join(r['protocols']) or '-'}")
    print(f"protocols ({len(protocols)}):")
    width = max((len(p["name"]) for p in protocols), default=0)
    for p in protocols:
        print(f"  {p['name']:<{width}}  {p['class']}  (plugin {p['plugin']})")


# ----------------------------------------------------------------------------------- main


def _command(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def _dispatch(args_list: list[str]) -> int:
    command = _command(args_list)
    pm = None
    if command in ("serve", "plugins"):
        # Before the parser exists: plugins add options to gev serve. A plugin that fails to
        # import stops gev serve here with PluginError, which names it and its distribution;
        # gev plugins, the tool to diagnose that with, lists it as broken instead.
        from ._plugins import get_plugin_manager

        pm = get_plugin_manager(strict=command == "serve")
    parser = build_parser(pm if command == "serve" else None)
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
    return _serve(args, pm, args_list[args_list.index("serve") + 1 :])


def _stdout_gone() -> int:
    # The reader went away (``gev plugins | head``): not an error worth a traceback. Point stdout
    # at /dev/null so that the interpreter's final flush does not raise again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gev`` command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _dispatch(args_list)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        if _command(args_list) == "serve":
            raise
        return _stdout_gone()
    except StartupError as exc:
        if exc.show_cause and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        print(f"gev: error: {exc}", file=sys.stderr)
        return exc.code
    except PluginError as exc:
        print(f"gev: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while starting up, before any handler is installed
        return 130
