"""Is this package running compiled code? And the switch that turns it off.

A wheel built with a C compiler carries some modules twice: as extension modules (compiled
with mypyc from the ``.py`` beside them, or a tiny C kernel) and as that ``.py`` source.
Python's import system prefers the extension. With the environment variable
``GEV_PURE_PYTHON=1`` set before the package is imported, importing this module (the first
thing the package's ``__init__`` does) puts a finder in front that loads the ``.py`` source
instead, and refuses the C kernels that have no source
(their callers fall back to Python), so one install can be debugged, profiled or compared as
pure Python.

Every gev package carries an identical copy of this module (``tests/test_packaging.py`` checks
that they match) because the packages are released separately and none may depend on another
just for this. Never compiled itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec, PathFinder
from importlib.util import spec_from_file_location
from types import ModuleType

__all__ = [
    "PURE_PYTHON_ENV",
    "install",
    "is_compiled",
    "package_is_compiled",
    "pure_python_requested",
]

#: Set to ``1`` to run the pure-Python source even where compiled modules are installed.
PURE_PYTHON_ENV = "GEV_PURE_PYTHON"

_EXTENSION_SUFFIXES = tuple(EXTENSION_SUFFIXES)


def pure_python_requested() -> bool:
    """True if ``GEV_PURE_PYTHON`` asks for pure Python (any value but empty or ``0``)."""
    return os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0")


class _SourceFinder(MetaPathFinder):
    """Finds a package's submodules as ``.py`` source even when an extension module exists."""

    def __init__(self, package: str) -> None:
        self.package = package
        self._prefix = package + "."

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if not fullname.startswith(self._prefix) or path is None:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or not (spec.origin or "").endswith(_EXTENSION_SUFFIXES):
            return spec
        origin = spec.origin or ""
        base = origin[: origin.rindex(os.sep) + 1] + fullname.rpartition(".")[2]
        source = base + ".py"
        if os.path.isfile(source):
            return spec_from_file_location(fullname, source)
        # Native only (a C kernel): behave as if it were not installed.
        raise ModuleNotFoundError(
            f"{fullname} is native code and {PURE_PYTHON_ENV} is set", name=fullname
        )


def install(package: str) -> None:
    """Honour ``GEV_PURE_PYTHON`` for ``package``: load its submodules from source from now on."""
    if not pure_python_requested():
        return
    for finder in sys.meta_path:
        if isinstance(finder, _SourceFinder) and finder.package == package:
            return
    sys.meta_path.insert(0, _SourceFinder(package))


def is_compiled(module: ModuleType) -> bool:
    """True if ``module`` was loaded from an extension module rather than ``.py`` source."""
    spec = module.__spec__
    origin = spec.origin if spec is not None else getattr(module, "__file__", None)
    return bool(origin) and str(origin).endswith(_EXTENSION_SUFFIXES)


def package_is_compiled(package: str) -> bool:
    """True if any submodule of ``package`` imported so far runs compiled code.

    Call it at the end of the package's ``__init__``, once the modules it imports eagerly (the
    hot ones) are loaded.
    """
    prefix = package + "."
    return any(
        is_compiled(module)
        for name, module in list(sys.modules.items())
        if name.startswith(prefix) and module is not None
    )


install(__name__.rpartition(".")[0])
