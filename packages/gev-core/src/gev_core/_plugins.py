"""Building the plugin manager, loading entry points, and the protocol registry.

The manager is built by :func:`get_plugin_manager` when a server is created, never at import
time. Environment opt-outs, in the spirit of pytest and tox:

* ``GEV_DISABLE_PLUGIN_AUTOLOAD=1`` -- load no entry-point plugins (built-ins still register);
* ``GEV_DISABLED_PLUGINS=name1,name2`` -- block those entry points by name;
* ``GEV_TRACE_PLUGINS=1`` -- log every hook call under the ``gev.plugins`` logger.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from ._errors import GevError
from .hookspecs import NAME

if TYPE_CHECKING:
    from ._protocol import Protocol
    from ._server import Server

logger = logging.getLogger("gev.plugins")

#: Marks a plugin's hook implementations: ``@hookimpl`` above ``def gev_register_protocols()``.
hookimpl = pluggy.HookimplMarker(NAME)

#: Answer of :func:`~gev_core.hookspecs.gev_select_protocol` meaning "ask me again with more bytes".
NEED_MORE_DATA = "gev:need-more-data"

#: Where the well-known protocols live, for the "which package to install" hint.
KNOWN_PROVIDERS = {
    "websocket": "gev-websocket",
    "protobuf": "gev-protobuf",
}

_BUILTIN_PLUGINS = ("gev_core._builtin",)


class PluginError(GevError):
    """A plugin could not be loaded, or plugins contradict each other."""


@dataclass
class PluginInfo:
    """One registered plugin, for ``gev plugins`` and error messages."""

    name: str
    plugin: Any
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    #: Why the plugin could not be used (only for plugins listed by ``gev plugins`` as broken).
    error: str | None = None

    @property
    def hooks(self) -> list[str]:
        return sorted(
            n
            for n in dir(self.plugin)
            if n.startswith("gev_") and callable(getattr(self.plugin, n))
        )

    def describe(self) -> str:
        if self.distribution:
            return f"{self.name!r} from {self.distribution} {self.version}"
        return f"{self.name!r} (built in)" if self.entry_point is None else repr(self.name)


@dataclass
class Config:
    """A server's configuration as plugins see it (:func:`gev_configure`)."""

    server: Server | None
    options: dict[str, Any] = field(default_factory=dict)
    pluginmanager: pluggy.PluginManager | None = None


class GevPluginManager(pluggy.PluginManager):
    """pluggy's manager plus the provenance of each plugin (distribution, entry point)."""

    def __init__(self) -> None:
        super().__init__(NAME)
        self.infos: dict[str, PluginInfo] = {}
        #: Plugins that failed to load, by name; only a non-strict manager keeps any.
        self.broken: dict[str, PluginInfo] = {}

    def register_info(self, plugin: Any, info: PluginInfo) -> None:
        self.register(plugin, name=info.name)
        self.infos[info.name] = info

    def info_for(self, plugin: Any) -> PluginInfo:
        name = self.get_name(plugin) or repr(plugin)
        return self.infos.get(name) or PluginInfo(name=name, plugin=plugin)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def get_plugin_manager(*, autoload: bool | None = None, strict: bool = True) -> GevPluginManager:
    """Build a plugin manager: hook specs, built-ins, then entry points, then validation.

    :param autoload: load ``gev`` entry points; default: unless ``GEV_DISABLE_PLUGIN_AUTOLOAD``.
    :param strict: raise for a plugin that cannot be used. Without it (``gev plugins``, the tool
        to diagnose one with) such a plugin is left out and recorded in ``pm.broken`` with its
        error.
    :raises PluginError: an entry point failed to import (the message names it and its
        distribution), or a plugin implements a hook that does not exist (a misspelling).
    """
    pm = GevPluginManager()
    pm.add_hookspecs(hookspecs)
    for modname in _BUILTIN_PLUGINS:
        module = __import__(modname, fromlist=["_"])
        pm.register_info(
            module, PluginInfo(name=modname.rsplit(".", 1)[-1].lstrip("_"), plugin=module)
        )
    for name in os.environ.get("GEV_DISABLED_PLUGINS", "").split(","):
        if name.strip():
            pm.set_blocked(name.strip())
    if autoload is None:
        autoload = not _env_flag("GEV_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        _load_entry_points(pm, strict)
    while True:
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            info = pm.info_for(exc.plugin)
            if strict:
                raise PluginError(f"plugin {info.describe()}: {exc}") from exc
            pm.unregister(exc.plugin)
            pm.infos.pop(info.name, None)
            pm.broken[info.name] = _broken(info, str(exc))
    if _env_flag("GEV_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: logger.info("%s", msg.rstrip()))
        pm.enable_tracing()
    return pm


def _broken(info: PluginInfo, error: str) -> PluginInfo:
    return PluginInfo(
        name=info.name,
        plugin=None,
        distribution=info.distribution,
        version=info.version,
        entry_point=info.entry_point,
        error=error,
    )


def _load_entry_points(pm: GevPluginManager, strict: bool = True) -> None:
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != NAME or ep.name in seen:
                continue
            seen.add(ep.name)
            if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                continue
            dist_name = dist.metadata["Name"]
            info = PluginInfo(
                name=ep.name,
                plugin=None,
                distribution=dist_name,
                version=dist.version,
                entry_point=ep.value,
            )
            try:
                info.plugin = ep.load()
            except Exception as exc:
                if not strict:
                    pm.broken[ep.name] = _broken(
                        info, f"failed to import: {type(exc).__name__}: {exc}"
                    )
                    continue
                raise PluginError(
                    f"gev plugin {ep.name!r} ({ep.value}) from distribution {dist_name}"
                    f" {dist.version} failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                pm.register_info(info.plugin, info)
            except ValueError as exc:
                if not strict:
                    pm.broken[ep.name] = _broken(info, f"could not register: {exc}")
                    continue
                raise PluginError(
                    f"gev plugin {info.describe()} could not register: {exc}"
                ) from exc


class ProtocolRegistry:
    """Protocol classes by name, collected from every plugin's ``gev_register_protocols``.

    :param strict: raise :class:`PluginError` for a plugin whose registration fails (the hook
        raises, a class without a name, a name taken by another plugin). Without it the plugin's
        error is recorded in :attr:`errors` and its classes are left out.
    """

    def __init__(self, pm: GevPluginManager, *, strict: bool = True) -> None:
        self._classes: dict[str, type[Protocol]] = {}
        self._providers: dict[str, PluginInfo] = {}
        #: Registration errors by plugin name (non-strict registries only).
        self.errors: dict[str, str] = {}
        hook = pm.hook.gev_register_protocols
        for impl in hook.get_hookimpls():
            info = pm.info_for(impl.plugin)
            try:
                self._register(info, impl.function)
            except PluginError as exc:
                if strict:
                    raise
                self.errors[info.name] = str(exc)

    def _register(self, info: PluginInfo, hook: Any) -> None:
        try:
            classes: list[type[Protocol]] = list(hook() or [])
        except Exception as exc:
            raise PluginError(
                f"plugin {info.describe()}: gev_register_protocols failed:"
                f" {type(exc).__name__}: {exc}"
            ) from exc
        for cls in classes:
            name = getattr(cls, "name", "")
            if not name or not isinstance(name, str):
                raise PluginError(f"plugin {info.describe()} registered {cls!r} without a name")
            if name in self._classes:
                other = self._classes[name]
                raise PluginError(
                    f"protocol name {name!r} is registered twice: {other.__module__}."
                    f"{other.__qualname__} by plugin {self._providers[name].describe()} and "
                    f"{cls.__module__}.{cls.__qualname__} by plugin {info.describe()}"
                )
        for cls in classes:
            self._classes[cls.name] = cls
            self._providers[cls.name] = info

    def names(self) -> list[str]:
        return sorted(self._classes)

    def provider(self, name: str) -> PluginInfo:
        return self._providers[name]

    def get(self, name: str) -> type[Protocol]:
        try:
            return self._classes[name]
        except KeyError:
            hint = ""
            if name in KNOWN_PROVIDERS:
                hint = f"; install it with: pip install {KNOWN_PROVIDERS[name]}"
            else:
                close = difflib.get_close_matches(name, [*self.names(), *KNOWN_PROVIDERS], n=1)
                if close and close[0] in self._classes:
                    hint = f"; did you mean {close[0]!r}?"
                elif close:
                    hint = (
                        f"; did you mean {close[0]!r}? (install it with: pip install"
                        f" {KNOWN_PROVIDERS[close[0]]})"
                    )
            raise PluginError(
                f"unknown protocol {name!r}: installed protocols are"
                f" {', '.join(self.names()) or 'none'}{hint}"
            ) from None

    def create(self, name: str, config: Config) -> Protocol:
        cls = self.get(name)
        from_config = getattr(cls, "from_config", None)
        return from_config(config) if callable(from_config) else cls()
