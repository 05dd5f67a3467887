"""Build hook of the gev packages: native code in the wheel where it can be built, pure otherwise.

Every gev package carries an identical copy of this file (``tests/test_compiled.py`` checks
that they match; ``docs/compiled.md`` explains the design). A package opts in with a table in
its ``pyproject.toml``::

    [tool.hatch.build.targets.wheel.hooks.custom]
    # modules compiled with mypyc, from the same .py files that ship next to them
    mypyc = ["src/gev_x/_hot.py"]
    # tiny C kernels with a pure-Python fallback: module name -> C sources
    c-extensions = { "gev_x._kernel" = ["src/gev_x/_kernel.c"] }
    # modules the compiled ones import from other distributions and that have no types
    mypyc-ignore-missing-imports = ["google.protobuf.*"]
    # the compiled modules import other gev packages (see ``dependencies``)
    mypyc-imports-dependencies = true

What a build produces:

* a **compiled platform wheel** (``cp3XX-cp3XX-<platform>``) when a C compiler and the Python
  headers are present: the listed modules as extension modules, with their ``.py`` sources
  still in the wheel (``GEV_PURE_PYTHON=1`` runs those at import time, see ``_compiled.py``);
* a **pure wheel** (``py3-none-any``) when no compiler works, or when ``GEV_BUILD_PURE=1`` is
  set. The code is the same; only speed differs.

``GEV_BUILD_REQUIRE_COMPILED=1`` turns "no compiler" into an error instead of a pure wheel, so a
CI job that means to test compiled code cannot silently test pure code. Editable installs
(``pip install -e``, the hatch development environments) are always pure: the code under test is
the source tree itself.

mypyc and setuptools are requested from the build frontend only when compiling (hatchling asks
``dependencies()`` before building), so a pure build needs nothing beyond hatchling.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# The compiler is part of the build's input: one mypy release for every package, so a set of
# wheels built together behaves alike. Raise it deliberately and rerun both test builds.
MYPY_REQUIREMENT = "mypy==2.4.1"
SETUPTOOLS_REQUIREMENT = "setuptools>=70"

_TRUE = ("1", "true", "yes", "on")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _compiler_command() -> list[str]:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def _missing_toolchain() -> str | None:
    """Why native code cannot be built here, or None if a trial compile works."""
    if sys.implementation.name != "cpython":
        return f"mypyc and the C kernels need CPython, not {sys.implementation.name}"
    cmd = _compiler_command()
    if not cmd or shutil.which(cmd[0]) is None:
        return f"no C compiler ({cmd[0] if cmd else 'CC'} not found)"
    include = sysconfig.get_paths()["include"]
    if not os.path.isfile(os.path.join(include, "Python.h")):
        return f"the Python headers are not installed (no Python.h in {include})"
    with tempfile.TemporaryDirectory(prefix="gev-cc-probe-") as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <Python.h>\nint gev_probe(void) { return PY_VERSION_HEX > 0; }\n")
        try:
            result = subprocess.run(
                [*cmd, "-I", include, "-c", src, "-o", os.path.join(tmp, "probe.o")],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"the C compiler does not run ({exc})"
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            return "the C compiler failed on a trial file" + (f": {detail[0]}" if detail else "")
    return None


class GevBuildHook(BuildHookInterface):  # type: ignore[type-arg, unused-ignore]
    """Compile the modules the package lists (see the module docstring)."""

    PLUGIN_NAME = "gev-native"

    # ------------------------------------------------------------------ configuration

    def _mypyc_paths(self) -> list[str]:
        paths = self.config.get("mypyc", [])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise TypeError("hook option `mypyc` must be a list of paths to .py files")
        return paths

    def _c_extensions(self) -> dict[str, list[str]]:
        exts = self.config.get("c-extensions", {})
        if not isinstance(exts, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v)
            for k, v in exts.items()
        ):
            raise TypeError("hook option `c-extensions` must map module names to lists of C files")
        return exts

    def _mypyc_ignore_missing(self) -> list[str]:
        mods = self.config.get("mypyc-ignore-missing-imports", [])
        if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
            raise TypeError("hook option `mypyc-ignore-missing-imports` must be a list of modules")
        return mods

    def _sibling_sources(self) -> list[str]:
        """``src`` directories of the other gev packages when building inside the monorepo.

        mypy type-checks what it compiles, including imports from other gev packages. In the
        repository those are read from source; a standalone sdist build installs the package's
        declared dependencies into the build environment instead (see ``dependencies``).
        """
        packages = Path(self.root).resolve().parent
        mine = Path(self.root).resolve()
        found = []
        if (packages.parent / "hatch.toml").is_file():
            for src in sorted(packages.glob("gev-*/src")):
                if src.parent != mine:
                    found.append(str(src))
        return found

    # ------------------------------------------------------------------ decisions

    def _wants_native(self) -> bool:
        return bool(self._mypyc_paths() or self._c_extensions()) and not _env_flag("GEV_BUILD_PURE")

    def dependencies(self) -> list[str]:
        if not self._wants_native():
            return []
        # A cheap guess (is there a compiler at all?): without one, don't make the frontend
        # download mypy for a build that will come out pure anyway.
        cmd = _compiler_command()
        if not _env_flag("GEV_BUILD_REQUIRE_COMPILED") and (
            not cmd or shutil.which(cmd[0]) is None
        ):
            return []
        deps = [SETUPTOOLS_REQUIREMENT]
        if self._mypyc_paths():
            deps.append(MYPY_REQUIREMENT)
            if self.config.get("mypyc-imports-dependencies"):
                # mypy type-checks the compiled modules' imports: other gev packages from their
                # sources inside the repository (see _sibling_sources), installed otherwise (a
                # standalone sdist build); third-party ones (wsproto...) always installed.
                siblings = bool(self._sibling_sources())
                deps.extend(
                    d
                    for d in self.metadata.core.dependencies
                    if not (siblings and d.startswith("gev-"))
                )
        return deps

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if version == "editable":
            # Development installs run the source tree as it is.
            return
        if not self._wants_native():
            if _env_flag("GEV_BUILD_PURE") and (self._mypyc_paths() or self._c_extensions()):
                self.app.display_info("gev build: GEV_BUILD_PURE is set, building a pure wheel")
            return
        reason = _missing_toolchain()
        if reason is not None:
            if _env_flag("GEV_BUILD_REQUIRE_COMPILED"):
                raise RuntimeError(f"gev build: GEV_BUILD_REQUIRE_COMPILED is set but {reason}")
            self.app.display_warning(
                f"gev build: {reason}; building a pure-Python wheel (same code, slower)"
            )
            return
        self._build_native(build_data)

    # ------------------------------------------------------------------ building

    def _build_native(self, build_data: dict[str, Any]) -> None:
        from setuptools import Distribution, Extension

        root = Path(self.root).resolve()
        work = Path(tempfile.mkdtemp(prefix="gev-build-"))
        self._work = work
        extensions: list[Any] = []
        mypyc_paths = self._mypyc_paths()
        cwd = os.getcwd()
        os.chdir(root)  # mypyc names modules by their paths relative to the project
        try:
            if mypyc_paths:
                extensions += self._mypycify(mypyc_paths, work)
            for name, sources in self._c_extensions().items():
                extensions.append(
                    Extension(
                        name,
                        [str(root / s) for s in sources],
                        extra_compile_args=["-O3"] if sys.platform != "win32" else [],
                    )
                )
            dist = Distribution({"name": self.metadata.name, "ext_modules": extensions})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib = str(work / "lib")  # type: ignore[attr-defined]
            cmd.build_temp = str(work / "temp")  # type: ignore[attr-defined]
            cmd.inplace = False  # type: ignore[attr-defined]
            cmd.ensure_finalized()
            cmd.run()
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            os.chdir(cwd)
        built = sorted(
            p
            for p in (work / "lib").rglob("*")
            if p.is_file() and p.name.endswith(tuple(_extension_suffixes()))
        )
        if not built:
            raise RuntimeError("gev build: the native build produced no extension module")
        for path in built:
            rel = path.relative_to(work / "lib").as_posix()
            build_data["force_include"][str(path)] = rel
            self.app.display_info(f"gev build: native {rel}")
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def _mypycify(self, paths: list[str], work: Path) -> list[Any]:
        from mypyc.build import mypycify

        config = work / "mypy.ini"
        lines = [
            "[mypy]",
            "strict = True",
            f"cache_dir = {work / 'mypy-cache'}",
            # Errors count in the modules being compiled; the interpreted modules that mypy
            # reads along the way (the package's __init__ names them all) are the type
            # checker's business, and may import what a standalone build does not install.
            "follow_imports = silent",
        ]
        siblings = self._sibling_sources()
        if siblings:
            lines.append(f"mypy_path = {os.pathsep.join(siblings)}")
        for mod in self._mypyc_ignore_missing():
            lines += [f"[mypy-{mod}]", "ignore_missing_imports = True"]
        config.write_text("\n".join(lines) + "\n")
        # One group per package, named after it: the shared library of a multi-module group
        # lands inside the package (gev_x/_native__mypyc...so), not loose in site-packages.
        package = _package_of(paths[0])
        exts: list[Any] = mypycify(
            ["--config-file", str(config), *paths],
            opt_level="3",
            group_name=f"{package}._native",
            target_dir=str(work / "mypyc"),
        )
        # mypycify has written the C sources; setuptools compiles them later, patched.
        from mypy.version import __version__ as mypy_version

        for source in sorted((work / "mypyc").rglob("*.c")):
            text = source.read_text()
            patched, classes = patch_weakref_dealloc(text, mypy_version)
            if classes:
                source.write_text(patched)
                self.app.display_info(
                    f"gev build: weak references cleared on dealloc: {', '.join(classes)}"
                )
        return exts

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------- the weakref patch
#
# A class compiled by mypyc that derives from an interpreted class (gev-core's Connection and
# EventLoop derive from the empty ``_base.Weakrefable`` for this) gets an instance dict and
# weak-reference support, but mypyc 2.4.1 gets the weak references wrong:
#
# * before CPython 3.12 the type has a ``__weakref__`` slot (``tp_weaklistoffset``), yet the
#   generated deallocator never calls ``PyObject_ClearWeakRefs``: a weak reference that outlives
#   the object (a WeakSet entry, a WeakKeyDictionary key) then points at freed memory, and the
#   next look at it crashes the process;
# * from CPython 3.12 on the type uses the managed dict and gets no weak-reference slot at all:
#   ``weakref.ref(obj)`` raises TypeError.
#
# So the build patches the C that mypyc wrote, before compiling it: the deallocator of each such
# class clears the weak references first (as CPython's own ``subtype_dealloc`` does), and on
# 3.12+ the type also gets ``Py_TPFLAGS_MANAGED_WEAKREF`` (the interpreter then keeps the list
# in the object's pre-header, which it already allocates for the managed dict). The patch
# knows the exact code mypyc 2.4.1 writes; any other mypy version, or a class whose code does
# not have the expected shape, fails the build instead of shipping a crash.

_PATCHED_FOR_MYPY = "2.4.1"
_PATCH_MARK = "/* gev build: weak references */"

# ``static PyTypeObject CPyType_<name>_template_ = { ... };`` and the fields we need from it.
_TEMPLATE_RE = re.compile(
    r"static PyTypeObject (?P<type>\w+)_template_ = \{\n(?P<body>.*?)\n\s*\};", re.DOTALL
)
_DEALLOC_FIELD_RE = re.compile(r"\.tp_dealloc = \(destructor\)(?P<fn>\w+),")
_WEAKLIST_FIELD_RE = re.compile(r"\.tp_weaklistoffset = (?P<offset>[^,\n]+),")
_MANAGED_DICT_RE = re.compile(r"\.tp_flags = [^\n]*\bPy_TPFLAGS_MANAGED_DICT\b")
_FLAGS_FIELD_RE = re.compile(r"(?P<field>\.tp_flags = [^,\n]+),")


class WeakrefPatchError(RuntimeError):
    """mypyc's generated C does not look as the weakref patch expects."""


def patch_weakref_dealloc(c_source: str, mypy_version: str) -> tuple[str, list[str]]:
    """Make the deallocators in ``c_source`` clear weak references; see the comment above.

    Returns the patched source and the type names patched (empty, and the source unchanged, when
    no class of this file has weak-reference support). Raises :class:`WeakrefPatchError` when
    ``mypy_version`` is not the one the patch was written for, or a class that needs the patch
    cannot get it: a silent skip would ship a use-after-free.
    """
    # Checked first, whatever the file holds: a newer mypyc may write these classes differently,
    # and then this function would not even recognise them.
    if mypy_version != _PATCHED_FOR_MYPY:
        raise WeakrefPatchError(
            f"the weakref patch of hatch_build.py is written for mypy {_PATCHED_FOR_MYPY}, the "
            f"build runs {mypy_version}: check what mypyc now generates for classes with an "
            "interpreted base (emitclass.py, tp_weaklistoffset, generate_dealloc_for_class) "
            "and update or drop the patch"
        )
    templates = [
        m
        for m in _TEMPLATE_RE.finditer(c_source)
        if _WEAKLIST_FIELD_RE.search(m["body"]) or _MANAGED_DICT_RE.search(m["body"])
    ]
    # Traits (typing.Protocol classes) have no deallocator before 3.12: never instantiated.
    templates = [m for m in templates if _DEALLOC_FIELD_RE.search(m["body"])]
    if not templates:
        return c_source, []
    if _PATCH_MARK in c_source:
        raise WeakrefPatchError("the C source is already patched")
    patched = c_source
    names = []
    for template in templates:
        body = template["body"]
        dealloc = _DEALLOC_FIELD_RE.search(body)
        assert dealloc is not None
        weaklist = _WEAKLIST_FIELD_RE.search(body)
        if weaklist is not None:
            # Before 3.12: the weak-reference list lives at tp_weaklistoffset.
            offset = weaklist["offset"].strip()
            clear = (
                f"if (*(PyObject **)((char *)self + {offset}) != NULL) "
                "PyObject_ClearWeakRefs((PyObject *)self);"
            )
        else:
            # 3.12+: the interpreter manages the list once the type says so.
            new_body, count = _FLAGS_FIELD_RE.subn(r"\g<field> | Py_TPFLAGS_MANAGED_WEAKREF,", body)
            if count != 1:
                raise WeakrefPatchError(f"{template['type']}: tp_flags not found")
            patched = patched.replace(body, new_body, 1)
            clear = "PyObject_ClearWeakRefs((PyObject *)self);"
        patched = _insert_after_untrack(patched, dealloc["fn"], f"{_PATCH_MARK} {clear}")
        names.append(template["type"].removeprefix("CPyType_"))
    return patched, names


def _insert_after_untrack(c_source: str, fn: str, line: str) -> str:
    """Insert ``line`` in deallocator ``fn`` right after it untracks the object from the GC.

    That is after a ``__del__`` ran (the object can no longer be resurrected) and before any
    field is cleared or the object is kept for reuse (mypyc's one-instance free list, which it
    uses for the objects of compiled lambdas), the place CPython's ``subtype_dealloc`` clears
    weak references.
    """
    head = re.compile(
        rf"\n[ \t]*static void\n[ \t]*{fn}\(\w+ \*self\)\n[ \t]*\{{\n(?P<pre>.*?)"
        r"(?P<untrack>[ \t]*PyObject_GC_UnTrack\(self\);\n)"
        r"(?:[ \t]*if \(\w+_free_instance == NULL\) \{\n[^{}]*?return;\n[ \t]*\}\n)?"
        rf"[ \t]*CPy_TRASHCAN_BEGIN\(self, {fn}\)",
        re.DOTALL,
    )
    found = list(head.finditer(c_source))
    if len(found) != 1 or "UnTrack" in found[0]["pre"]:
        raise WeakrefPatchError(
            f"deallocator {fn}: expected one 'PyObject_GC_UnTrack(self);' followed by "
            f"'CPy_TRASHCAN_BEGIN(self, {fn})' (or mypyc's free-list reuse, then that), "
            f"found {len(found)} candidates"
        )
    m = found[0]
    indent = m["untrack"][: len(m["untrack"]) - len(m["untrack"].lstrip())]
    at = m.end("untrack")
    return c_source[:at] + indent + line + "\n" + c_source[at:]


def _package_of(path: str) -> str:
    parts = Path(path).parts
    if "src" in parts:
        parts = parts[parts.index("src") + 1 :]
    return parts[0]


def _extension_suffixes() -> list[str]:
    from importlib.machinery import EXTENSION_SUFFIXES

    return list(EXTENSION_SUFFIXES)
