"""Hook specifications for gev plugins. Each docstring here *is* the reference documentation.

A plugin is a module (or object) with functions marked ``@gev_core.hookimpl``, advertised by its
distribution under the ``gev`` entry-point group::

    [project.entry-points.gev]
    myproto = "gev_myproto.plugin"

Plugins are discovered when a :class:`~gev_core.Server` is created (never at import). Every hook is
about lifecycle or registration: none of them is ever called per message.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ._connection import Connection
    from ._loop import EventLoop
    from ._plugins import Config
    from ._protocol import Protocol
    from ._server import Server
    from ._workers import Supervisor

#: The one name of the plugin system: pluggy project name, hook prefix and entry-point group.
NAME = "gev"

hookspec = pluggy.HookspecMarker(NAME)


# -------------------------------------------------------------------------------------------------
# Initialization
# -------------------------------------------------------------------------------------------------


@hookspec(historic=True)
def gev_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Called once when the plugin is registered, to add hook specifications of its own.

    Use ``pluginmanager.add_hookspecs(module_or_class)`` so that other plugins can extend yours.

    :param pluginmanager: the gev plugin manager.

    .. versionadded:: 0.1
    """


@hookspec
def gev_addoption(parser: argparse.ArgumentParser) -> None:
    """Add command-line options to ``gev serve``.

    Prefix option names with your plugin's name (``--ws-max-message-size``) unless the option is
    meant to be shared. The parsed values reach :func:`gev_configure` as ``config.options``.

    :param parser: the ``gev serve`` argument parser (add an argument group for tidy ``--help``).

    .. versionadded:: 0.1
    """


@hookspec(historic=True)
def gev_configure(config: Config) -> None:
    """Called once a server's configuration is known, before its loops start.

    Read ``config.options`` (the server's keyword arguments merged with ``gev serve``'s parsed
    options) and validate them: raise ``ValueError`` with a clear message for bad values. Historic:
    a plugin registered later still gets the call.

    Under ``gev serve --workers N``, ``config.options["worker_index"]`` is the index (``0`` to
    ``N - 1``) of this worker process's slot -- a worker that replaces another (a restart, a
    rolling restart) gets the index of the one it replaces -- and ``config.options["workers"]``
    is ``N``; ``worker_index`` is ``None`` (or absent) in a process that is not a supervised
    worker.

    :param config: the server's configuration; ``config.server`` is the :class:`Server`.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------------------------------
# Registration
# -------------------------------------------------------------------------------------------------


@hookspec
def gev_register_protocols() -> list[type[Protocol]]:  # type: ignore[empty-body]
    """Return the :class:`~gev_core.Protocol` classes this plugin provides.

    Each class carries its own ``name`` (``Server(protocol="name")``, ``gev serve --protocol``).
    Names are unique across all plugins: a duplicate stops the server with an error naming both
    providers. A class may define ``from_config(cls, config) -> Protocol`` to build itself from
    the configuration; otherwise it is instantiated with no arguments.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def gev_select_protocol(connection: Connection, data: bytes, candidates: list[str]) -> str | None:
    """Choose the protocol of a connection from its first bytes (one listener, several protocols).

    Called only on servers built with several protocols (``protocol=["websocket", "protobuf"]``),
    once per connection, with the bytes received so far. Return the name of one of
    ``candidates`` to pick it, :data:`~gev_core.NEED_MORE_DATA` to be asked again when more bytes
    have arrived, or ``None`` to leave the choice to other plugins (answer for your own protocol
    only). When no plugin claims the bytes, the last candidate, the fallback, takes them if its
    plugin has no selector of its own (a catch-all such as ``line``); if it has one, it has
    declined them too, and the connection is closed with a WARNING. A connection that has not
    been assigned a protocol after ``Server(select_timeout=...)`` seconds (10 by default) is
    closed with a WARNING.

    :param connection: the new connection.
    :param data: the first bytes the peer sent (at most 64).
    :param candidates: the names of the server's protocols, in the order given.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def gev_timer_service(server: Server) -> Any:
    """Provide the timer service of a server: ``run_after``, ``run_every`` and idle reaping.

    The service is an object with ``run_after(delay, fn, *args)``, ``run_every(interval, fn,
    *args)``, ``conn_run_after(conn, delay, fn, *args)`` and ``install(loop)`` (called on each
    loop's thread before it serves, to set the loop's deadline source). gev-timers implements it;
    without such a plugin, asking for a timer or ``idle_time`` fails with a message naming the
    package to install.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------------------------------
# Lifecycle
# -------------------------------------------------------------------------------------------------


@hookspec
def gev_server_started(server: Server) -> None:
    """Called when ``server.start()`` begins serving, on the thread that called it.

    .. versionadded:: 0.1
    """


@hookspec
def gev_loop_started(loop: EventLoop) -> None:
    """Called on each event loop's own thread just before it starts serving.

    The place to install per-loop machinery, such as ``loop.set_deadline_source(...)``.

    .. versionadded:: 0.1
    """


@hookspec
def gev_server_stopping(server: Server) -> None:
    """Called when ``server.stop()`` begins, before connections are drained and closed.

    .. versionadded:: 0.1
    """


@hookspec
def gev_server_stopped(server: Server) -> None:
    """Called when ``server.start()`` returns, on the thread that called it.

    Every connection has been closed (``on_close`` has run for each) and the listener too: the
    place to release what :func:`gev_server_started` set up. ``server.stop(wait=True)`` returns
    after it. Not called for a server that never started.

    .. versionadded:: 0.1
    """


@hookspec
def gev_connection_made(connection: Connection) -> None:
    """Called on the connection's loop for each accepted connection, before ``on_connect``.

    Resolved once at server start: when no plugin implements it, it costs nothing per
    connection. Never called per message.

    .. versionadded:: 0.1
    """


@hookspec
def gev_connection_lost(connection: Connection) -> None:
    """Called on the connection's loop once it is closed, before the handler's ``on_close``.

    Resolved once at server start, like :func:`gev_connection_made`.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------------------------------
# The supervisor of ``gev serve --workers``
# -------------------------------------------------------------------------------------------------


@hookspec
def gev_supervisor_started(supervisor: Supervisor) -> None:
    """Called in the supervisor process of ``gev serve --workers`` once it has bound the
    listening sockets, before it starts the first worker.

    The supervisor runs no :class:`~gev_core.Server` (its workers do), so this is where a plugin
    sets up what belongs to the whole group of workers: an admin endpoint reporting
    ``supervisor.ready``, say. ``supervisor.config.options`` holds the options the plugins added
    to ``gev serve``, as parsed; variables put into ``supervisor.worker_env`` are added to the
    environment of every worker started from then on. A hook that raises stops the supervisor
    before any worker starts.

    :param supervisor: the :class:`~gev_core.Supervisor`.

    .. versionadded:: 0.1
    """


@hookspec
def gev_worker_exited(supervisor: Supervisor, index: int, pid: int, returncode: int) -> None:
    """Called in the supervisor for each worker process that has exited, once.

    Whatever the reason: a crash (the supervisor restarts it), a stop, a rolling restart that
    replaced it, or a new worker that never became ready.

    :param supervisor: the :class:`~gev_core.Supervisor`.
    :param index: the worker's slot (``config.options["worker_index"]`` in that worker).
    :param pid: its process id.
    :param returncode: its exit status; negative for the signal that killed it.

    .. versionadded:: 0.1
    """


@hookspec
def gev_supervisor_stopped(supervisor: Supervisor) -> None:
    """Called in the supervisor once every worker has exited, before ``Supervisor.run()``
    returns; also when it fails after :func:`gev_supervisor_started`.

    .. versionadded:: 0.1
    """
