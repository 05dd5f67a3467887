"""Compiled and pure builds: the COMPILED flags, GEV_PURE_PYTHON, and the shared build files.

The whole suite runs twice in CI: ``hatch test`` against the source tree (pure Python) and
``hatch run compiled:test`` against wheels built with native code. ``GEV_EXPECT_COMPILED``
(``1`` or ``0``, set by those environments) tells these tests which of the two they are in, so
a compiled run that silently imported pure code fails here instead of passing for the wrong
reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p for p in (ROOT / "packages").glob("gev-*") if (p / "pyproject.toml").exists())
MODULES = [p.name.replace("-", "_") for p in PACKAGES]


def _hook_table(package: Path) -> dict[str, object]:
    if sys.version_info >= (3, 11):
        import tomllib

        data = tomllib.loads((package / "pyproject.toml").read_text())
        hooks = data["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]
        table: dict[str, object] = hooks["custom"]
        return table
    pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+)")


def _native_packages() -> set[str]:
    """Packages whose build hook lists modules to compile or C kernels."""
    return {
        p.name.replace("-", "_")
        for p in PACKAGES
        if _hook_table(p).get("mypyc") or _hook_table(p).get("c-extensions")
    }


def _probe(env_extra: dict[str, str]) -> dict[str, dict[str, object]]:
    """Import every package in a fresh interpreter; report COMPILED and where modules came from."""
    code = """
import json, sys
out = {}
for name in sys.argv[1:]:
    mod = __import__(name)
    files = {m: getattr(sys.modules[m], "__file__", "") or ""
             for m in list(sys.modules) if m.startswith(name + ".")}
    out[name] = {"compiled": mod.COMPILED, "files": files}
import gev_websocket
out["gev_websocket"]["native_unmask"] = gev_websocket.NATIVE_UNMASK
import gev_core._connection
out["gev_core"]["native_io"] = gev_core._connection.NATIVE_IO
print(json.dumps(out))
"""
    env = dict(os.environ)
    env.pop("GEV_PURE_PYTHON", None)
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, "-c", code, *MODULES],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT / "tests"),
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, dict[str, object]] = json.loads(proc.stdout)
    return result


def test_every_package_has_the_same_build_hook_and_runtime_helper() -> None:
    hooks = {p.name: (p / "hatch_build.py").read_text() for p in PACKAGES}
    helpers = {
        p.name: (p / "src" / p.name.replace("-", "_") / "_compiled.py").read_text()
        for p in PACKAGES
    }
    first = PACKAGES[0].name
    for name in hooks:
        assert hooks[name] == hooks[first], f"{name}/hatch_build.py differs from {first}'s"
        assert helpers[name] == helpers[first], f"{name}'s _compiled.py differs from {first}'s"


def test_every_package_declares_the_hook_and_ships_it_in_its_sdist() -> None:
    for package in PACKAGES:
        table = _hook_table(package)
        text = (package / "pyproject.toml").read_text()
        assert "hatch_build.py" in text.split("[tool.hatch.build.targets.sdist]", 1)[1], package
        for path in table.get("mypyc", []):  # type: ignore[attr-defined]
            assert (package / path).is_file(), f"{package.name}: {path} does not exist"


def test_base_classes_meant_for_subclassing_stay_interpreted() -> None:
    # mypyc lays a compiled subclass out against its base as seen at build time; a base that is
    # compiled in another wheel crashes it (and interpreted subclasses of compiled classes are
    # refused). These modules hold the classes users and other packages subclass.
    interpreted = {
        # _base.Weakrefable: the interpreted base that gives Connection and EventLoop an
        # instance dict and weak-reference support; testing: FakeConnection and helpers.
        "gev-core": ["_protocol.py", "_handler.py", "_errors.py", "_base.py", "testing.py"],
        "gev-ringbuffer": ["_errors.py"],
        "gev-protobuf": ["_errors.py", "_registry.py"],
        "gev-websocket": ["_protocol.py"],
    }
    for package in PACKAGES:
        compiled = {Path(p).name for p in _hook_table(package).get("mypyc", [])}  # type: ignore[attr-defined]
        assert not compiled & set(interpreted.get(package.name, [])), package.name


def test_compiled_flags_match_the_build_under_test() -> None:
    expect = os.environ.get("GEV_EXPECT_COMPILED")
    got = _probe({})
    flags = {name: info["compiled"] for name, info in got.items()}
    for name in MODULES:
        module = importlib.import_module(name)
        assert module.COMPILED is flags[name]  # same answer in and out of process
    if expect == "1":
        native = _native_packages()
        assert flags == {name: name in native for name in MODULES}
        assert got["gev_websocket"]["native_unmask"] is True
        assert got["gev_core"]["native_io"] is True
    elif expect == "0":
        assert not any(flags.values()), flags
    else:
        pytest.skip("GEV_EXPECT_COMPILED is not set (hatch test sets 0, compiled:test sets 1)")


def test_pure_python_switch_loads_every_module_from_source() -> None:
    got = _probe({"GEV_PURE_PYTHON": "1"})
    for name, info in got.items():
        assert info["compiled"] is False, name
        files: dict[str, str] = info["files"]  # type: ignore[assignment]
        native = {m: f for m, f in files.items() if not f.endswith((".py", ".pyc"))}
        assert not native, f"{name} loaded native modules under GEV_PURE_PYTHON=1: {native}"
    assert got["gev_websocket"]["native_unmask"] is False
    assert got["gev_core"]["native_io"] is False


@pytest.mark.skipif(
    os.environ.get("GEV_EXPECT_COMPILED") != "1", reason="only meaningful in the compiled build"
)
def test_compiled_build_really_runs_native_code() -> None:
    import gev_core
    import gev_protobuf
    import gev_ringbuffer
    import gev_timers
    from gev_websocket import WebSocketSession, _fastpath

    # A mypyc-compiled method or function is not a Python function object.
    assert not isinstance(gev_core.Connection.send, types.FunctionType)
    assert not isinstance(gev_core.EventLoop.run, types.FunctionType)
    assert not isinstance(gev_core.LoopStats.as_dict, types.FunctionType)
    assert not isinstance(gev_core.write_shared, types.FunctionType)
    assert not isinstance(gev_ringbuffer.RingBuffer.write, types.FunctionType)
    assert not isinstance(gev_timers.LoopTimers.run_after, types.FunctionType)
    assert not isinstance(gev_protobuf.scan_frames, types.FunctionType)
    assert not isinstance(gev_protobuf.ProtobufProtocol.receive, types.FunctionType)
    assert not isinstance(WebSocketSession.receive, types.FunctionType)
    assert _fastpath._apply_mask is not None
    assert type(_fastpath._apply_mask).__name__ == "builtin_function_or_method"


@pytest.mark.skipif(
    os.environ.get("GEV_EXPECT_COMPILED") != "1", reason="only meaningful in the compiled build"
)
def test_gev_core_compiles_its_hot_modules_and_keeps_the_bases_interpreted() -> None:
    files: dict[str, str] = _probe({})["gev_core"]["files"]  # type: ignore[assignment]

    def native(module: str) -> bool:
        return not files[f"gev_core.{module}"].endswith((".py", ".pyc"))

    for module in ("_stats", "_connection", "_loop", "_fanout", "_jobs", "_reorder", "_companion"):
        assert native(module), f"gev_core.{module} is not compiled: {files[f'gev_core.{module}']}"
    # What users and other packages subclass, and the helpers they test with.
    for module in ("_base", "_protocol", "_handler", "_errors", "testing"):
        importlib.import_module(f"gev_core.{module}")
        path = files.get(f"gev_core.{module}") or sys.modules[f"gev_core.{module}"].__file__
        assert str(path).endswith(".py"), f"gev_core.{module} must stay interpreted: {path}"


def _build_wheel(package: str, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("hatchling")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEV_BUILD_")}
    return subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT / "packages" / package,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("package", "env"),
    [("gev-timers", {"GEV_BUILD_PURE": "1"}), ("gev-websocket", {"CC": "no-such-compiler"})],
)
def test_a_build_without_native_code_is_a_complete_pure_wheel(
    tmp_path: Path, package: str, env: dict[str, str]
) -> None:
    import zipfile

    proc = _build_wheel(package, tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    module = package.replace("-", "_")
    sources = {p.name for p in (ROOT / "packages" / package / "src" / module).glob("*.py")}
    assert sources <= {Path(n).name for n in names if n.startswith(module + "/")}
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c"))]


def test_a_build_that_must_compile_fails_without_a_compiler(tmp_path: Path) -> None:
    proc = _build_wheel(
        "gev-ringbuffer", tmp_path, {"CC": "no-such-compiler", "GEV_BUILD_REQUIRE_COMPILED": "1"}
    )
    assert proc.returncode != 0
    assert "GEV_BUILD_REQUIRE_COMPILED is set but no C compiler" in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("*.whl"))


# ---------------------------------------------------------------------- the weakref patch


def _hook_module() -> types.ModuleType:
    pytest.importorskip("hatchling")
    spec = importlib.util.spec_from_file_location(
        "_gev_hatch_build", ROOT / "packages" / "gev-core" / "hatch_build.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Shapes of what mypyc 2.4.1 writes for a class with an interpreted base (trimmed).
_DEALLOC = """
static void
_m___C_dealloc(m____m___CObject *self)
{
    PyObject_GC_UnTrack(self);
    CPy_TRASHCAN_BEGIN(self, _m___C_dealloc)
    CPyDef__m___C_clear((PyObject *)self);
    Py_TYPE(self)->tp_free((PyObject *)self);
    CPy_TRASHCAN_END(self)
    done: ;
}
"""
_BEFORE_312 = (
    _DEALLOC
    + """
static PyTypeObject CPyType__m___C_template_ = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "C",
    .tp_dealloc = (destructor)_m___C_dealloc,
    .tp_basicsize = sizeof(m____m___CObject) + 2*sizeof(PyObject *),
    .tp_dictoffset = sizeof(m____m___CObject),
    .tp_weaklistoffset = sizeof(m____m___CObject) + sizeof(PyObject *),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HEAPTYPE | Py_TPFLAGS_HAVE_GC,
};
"""
)
_SINCE_312 = (
    _DEALLOC
    + """
static PyTypeObject CPyType__m___C_template_ = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "C",
    .tp_dealloc = (destructor)_m___C_dealloc,
    .tp_basicsize = sizeof(m____m___CObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_MANAGED_DICT,
};
"""
)


def test_weakref_patch_clears_the_weak_list_before_3_12() -> None:
    hook = _hook_module()
    out, names = hook.patch_weakref_dealloc(_BEFORE_312, "2.4.1")
    assert names == ["_m___C"]
    untrack, clear, trashcan = out.split("{\n", 1)[1].splitlines()[:3]
    assert untrack.strip() == "PyObject_GC_UnTrack(self);"
    assert "if (*(PyObject **)((char *)self + sizeof(m____m___CObject) + sizeof(PyObject *))" in (
        clear
    )
    assert clear.endswith("PyObject_ClearWeakRefs((PyObject *)self);")
    assert trashcan.strip().startswith("CPy_TRASHCAN_BEGIN")
    assert "MANAGED_WEAKREF" not in out


def test_weakref_patch_manages_the_weak_list_from_3_12() -> None:
    hook = _hook_module()
    out, names = hook.patch_weakref_dealloc(_SINCE_312, "2.4.1")
    assert names == ["_m___C"]
    assert "Py_TPFLAGS_MANAGED_DICT | Py_TPFLAGS_MANAGED_WEAKREF," in out
    clear = out.split("PyObject_GC_UnTrack(self);\n", 1)[1].splitlines()[0]
    assert clear.strip().endswith("*/ PyObject_ClearWeakRefs((PyObject *)self);")


def test_weakref_patch_clears_before_mypyc_keeps_an_instance_for_reuse() -> None:
    # mypyc keeps one freed instance of a compiled lambda's class for the next one.
    hook = _hook_module()
    reuse = _BEFORE_312.replace(
        "    PyObject_GC_UnTrack(self);\n",
        "    PyObject_GC_UnTrack(self);\n"
        "    if (_m___C_free_instance == NULL) {\n"
        "        _m___C_free_instance = self;\n"
        "        Py_CLEAR(self->___mypyc_env__);\n"
        "        return;\n"
        "    }\n",
    )
    out, names = hook.patch_weakref_dealloc(reuse, "2.4.1")
    assert names == ["_m___C"]
    after_untrack = out.split("PyObject_GC_UnTrack(self);\n", 1)[1].splitlines()
    assert after_untrack[0].endswith("PyObject_ClearWeakRefs((PyObject *)self);")
    assert after_untrack[1].strip().startswith("if (_m___C_free_instance == NULL)")


def test_weakref_patch_leaves_other_classes_alone() -> None:
    hook = _hook_module()
    plain = _SINCE_312.replace(" | Py_TPFLAGS_MANAGED_DICT", "")
    assert hook.patch_weakref_dealloc(plain, "2.4.1") == (plain, [])


@pytest.mark.parametrize(
    ("source", "mypy_version", "message"),
    [
        (_SINCE_312, "2.5.0", "written for mypy 2.4.1"),
        # Even with nothing recognisable to patch: a new mypyc may write it differently.
        ("/* no classes */", "2.5.0", "written for mypy 2.4.1"),
        (
            _SINCE_312.replace(" | Py_TPFLAGS_MANAGED_DICT,", " | Py_TPFLAGS_MANAGED_DICT\n | 0,"),
            "2.4.1",
            "tp_flags not found",
        ),
        (_BEFORE_312.replace("    PyObject_GC_UnTrack(self);\n", ""), "2.4.1", "_m___C_dealloc"),
        (_SINCE_312.replace("CPy_TRASHCAN_BEGIN", "CPy_SOMETHING_ELSE"), "2.4.1", "expected one"),
    ],
)
def test_weakref_patch_fails_loudly_on_code_it_does_not_know(
    source: str, mypy_version: str, message: str
) -> None:
    hook = _hook_module()
    with pytest.raises(hook.WeakrefPatchError, match=message):
        hook.patch_weakref_dealloc(source, mypy_version)
