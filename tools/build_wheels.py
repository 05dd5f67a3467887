"""Build the wheels of every gev package, check them, optionally install them.

    python tools/build_wheels.py                      # compiled wheels for this Python
    python tools/build_wheels.py --all-pythons --check
    python tools/build_wheels.py --python python3.12 --python python3.13 --check
    python tools/build_wheels.py --pure --check       # GEV_BUILD_PURE=1: pure wheels
    python tools/build_wheels.py --install            # into the running environment
    python tools/build_wheels.py --install --prebuilt dist/wheels   # reuse an earlier build

Each package is built on its own, from its own directory, by the packages' build hook
(``hatch_build.py``; see docs/compiled.md), exactly as ``pip wheel ./packages/gev-x`` would:
a platform wheel with native code where a C compiler works. Unless ``--pure`` is given the
build must come out compiled (``GEV_BUILD_REQUIRE_COMPILED=1``): a machine without a compiler
fails here instead of quietly producing pure wheels.

``--check`` installs each interpreter's wheels into a fresh virtual environment and imports every
package there, once normally and once with ``GEV_PURE_PYTHON=1``, asserting which ones run
compiled code. ``--install`` (re)installs the wheels built for the running interpreter into the
running environment, without touching their dependencies if already present: that is how
``hatch run compiled:test`` tests the compiled build.

Wheels go to ``dist/wheels/<python tag>/`` (``--out`` to change). Uses ``uv`` (a dependency of
hatch) when it can be found, else ``pip``.

``--prebuilt DIR`` (or the environment variable ``GEV_PREBUILT_WHEELS=DIR``) builds nothing: it
takes the wheels an earlier run wrote to ``DIR/<python tag>/`` (its ``--out``), after checking
there is one per package and, unless ``--pure``, that the native ones are platform wheels. CI
builds once (``--check``) and lets ``hatch run compiled:test`` install that build; without it the
install step builds for real, as a developer expects.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p for p in (ROOT / "packages").glob("gev-*") if (p / "pyproject.toml").exists())


def _uv() -> list[str] | None:
    for candidate in (os.environ.get("HATCH_UV"), shutil.which("uv")):
        if candidate:
            return [candidate]
    try:
        import uv  # type: ignore[import-not-found, unused-ignore]

        return [uv.find_uv_bin()]
    except Exception:
        return None


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)


def _python_info(python: str) -> tuple[str, str]:
    """(absolute executable, tag like cp312) of an interpreter."""
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.executable, 'cp%d%d' % sys.version_info[:2])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0], out[1]


def _pyenv_pythons() -> list[str]:
    """Every CPython 3.10+ interpreter pyenv knows, else the python3.X on PATH."""
    found: dict[str, str] = {}
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    for root in filter(None, roots):
        for exe in sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3"))):
            version = Path(exe).parent.parent.name
            minor = ".".join(version.split(".")[:2])
            if minor.replace(".", "").isdigit() and int(minor.split(".")[1]) >= 10:
                found.setdefault(minor, exe)
    if not found:
        for minor in ("3.10", "3.11", "3.12", "3.13"):
            exe = shutil.which(f"python{minor}")
            if exe:
                found[minor] = exe
    return [found[k] for k in sorted(found, key=lambda v: int(v.split(".")[1]))]


def _resolve(python: str) -> str:
    """An interpreter path, or a version like ``3.12`` looked up in pyenv, then on PATH."""
    if not python.replace(".", "").isdigit():
        return python
    for exe in _pyenv_pythons():
        if Path(exe).parent.parent.name.startswith(python + "."):
            return exe
    return shutil.which(f"python{python}") or python


def build(python: str, out: Path, pure: bool) -> list[Path]:
    exe, tag = _python_info(python)
    dest = out / tag
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    env = dict(os.environ)
    env.pop("GEV_BUILD_PURE", None)
    env.pop("GEV_BUILD_REQUIRE_COMPILED", None)
    env["GEV_BUILD_PURE" if pure else "GEV_BUILD_REQUIRE_COMPILED"] = "1"
    uv = _uv()
    for package in PACKAGES:
        if uv:
            cmd = [*uv, "build", "--wheel", "--python", exe, "--out-dir", str(dest), str(package)]
        else:
            cmd = [exe, "-m", "pip", "wheel", "--no-deps", "-w", str(dest), str(package)]
        _run(cmd, env)
    wheels = sorted(dest.glob("*.whl"))
    print(f"== {tag}: {len(wheels)} wheels in {dest}")
    for wheel in wheels:
        print(f"   {wheel.name}")
    return wheels


def prebuilt(python: str, src: Path, pure: bool) -> list[Path]:
    """The wheels an earlier :func:`build` wrote for ``python`` under ``src``, checked."""
    _exe, tag = _python_info(python)
    dest = src / tag
    wheels = sorted(dest.glob("*.whl"))
    names = {w.name.split("-", 1)[0] for w in wheels}
    want = {p.name.replace("-", "_") for p in PACKAGES}
    if names != want or len(wheels) != len(want):
        raise SystemExit(
            f"--prebuilt {src}: expected one wheel per package in {dest}, found"
            f" {[w.name for w in wheels]}"
        )
    if not pure:
        expected = _expected_compiled()
        generic = [
            w.name
            for w in wheels
            if expected[w.name.split("-", 1)[0]] and w.name.endswith("-none-any.whl")
        ]
        if generic:
            raise SystemExit(f"--prebuilt {src}: pure wheels where native code belongs: {generic}")
    print(f"== {tag}: reusing {len(wheels)} prebuilt wheels from {dest}")
    return wheels


# Which packages must say COMPILED in a compiled build: those whose hook table lists modules.
def _expected_compiled() -> dict[str, bool]:
    expected = {}
    for package in PACKAGES:
        text = (package / "pyproject.toml").read_text()
        table = text.split("[tool.hatch.build.targets.wheel.hooks.custom]", 1)
        body = table[1].split("\n[", 1)[0] if len(table) == 2 else ""
        native = any(
            line.split("=", 1)[1].split("#", 1)[0].strip() not in ("[]", "{}")
            for line in body.splitlines()
            if line.strip().startswith(("mypyc =", "c-extensions ="))
        )
        expected[package.name.replace("-", "_")] = native
    return expected


_PROBE = """
import json, sys
names = sys.argv[1:]
mods = {n: __import__(n) for n in names}
print(json.dumps({n: m.COMPILED for n, m in mods.items()}))
"""


def check(python: str, wheels: list[Path], pure: bool) -> None:
    exe, tag = _python_info(python)
    expected = _expected_compiled()
    with tempfile.TemporaryDirectory(prefix=f"gev-wheels-{tag}-") as tmp:
        venv = Path(tmp) / "venv"
        uv = _uv()
        if uv:
            _run([*uv, "venv", "-q", "--python", exe, str(venv)])
            vpy = str(venv / "bin" / "python")
            _run([*uv, "pip", "install", "-q", "--python", vpy, *map(str, wheels)])
        else:
            _run([exe, "-m", "venv", str(venv)])
            vpy = str(venv / "bin" / "python")
            _run([vpy, "-m", "pip", "install", "-q", *map(str, wheels)])
        for forced_pure in (False, True):
            env = dict(os.environ)
            env.pop("PYTHONPATH", None)
            env.pop("GEV_PURE_PYTHON", None)
            if forced_pure:
                env["GEV_PURE_PYTHON"] = "1"
            got = json.loads(
                subprocess.run(
                    [vpy, "-c", _PROBE, *expected],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tmp,
                ).stdout
            )
            want = {n: (e and not pure and not forced_pure) for n, e in expected.items()}
            label = "GEV_PURE_PYTHON=1" if forced_pure else "default"
            print(f"== {tag} {label}: {got}")
            if got != want:
                raise SystemExit(f"{tag} {label}: expected COMPILED {want}, got {got}")


def install(wheels: list[Path]) -> None:
    uv = _uv()
    files = list(map(str, wheels))
    names = [w.name.split("-", 1)[0].replace("_", "-") for w in wheels]
    if uv:
        base = [*uv, "pip", "install", "--python", sys.executable]
    else:
        base = [sys.executable, "-m", "pip", "install"]
    # Dependencies as usual, then our wheels again over whatever an earlier run left behind
    # (same version numbers, different builds).
    _run([*base, *files])
    _run([*base, "--reinstall" if uv else "--force-reinstall", "--no-deps", *files])
    print(f"== installed {', '.join(names)} into {sys.prefix}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", help="interpreter to build for (repeatable)")
    ap.add_argument("--all-pythons", action="store_true", help="every CPython 3.10+ of pyenv")
    ap.add_argument("--pure", action="store_true", help="build pure wheels (GEV_BUILD_PURE=1)")
    ap.add_argument("--check", action="store_true", help="install in a fresh venv and import")
    ap.add_argument("--install", action="store_true", help="install into this environment")
    ap.add_argument("--out", type=Path, default=ROOT / "dist" / "wheels")
    ap.add_argument(
        "--prebuilt",
        type=Path,
        default=os.environ.get("GEV_PREBUILT_WHEELS") or None,
        metavar="DIR",
        help="reuse the wheels of an earlier run in DIR (its --out) instead of building;"
        " default: $GEV_PREBUILT_WHEELS",
    )
    args = ap.parse_args()
    pythons = [_resolve(p) for p in args.python or ()] or (
        _pyenv_pythons() if args.all_pythons else [sys.executable]
    )
    if not pythons:
        raise SystemExit("no interpreter found")
    for python in pythons:
        if args.prebuilt is not None:
            wheels = prebuilt(python, args.prebuilt.resolve(), args.pure)
        else:
            wheels = build(python, args.out, args.pure)
        if args.check:
            check(python, wheels, args.pure)
        if args.install:
            if _python_info(python)[0] != _python_info(sys.executable)[0]:
                raise SystemExit("--install needs the wheels of the running interpreter")
            install(wheels + sorted(_example_plugin(args.prebuilt or args.out, python)))


def _example_plugin(out: Path, python: str) -> list[Path]:
    """The test suite's example third-party plugin, built next to the wheels (tests need it)."""
    exe, tag = _python_info(python)
    dest = out / tag / "test-plugins"
    dest.mkdir(parents=True, exist_ok=True)
    uv = _uv()
    plugin = ROOT / "tests" / "plugins" / "gev-example-plugin"
    if uv:
        _run([*uv, "build", "--wheel", "--python", exe, "--out-dir", str(dest), str(plugin)])
    else:
        _run([exe, "-m", "pip", "wheel", "--no-deps", "-w", str(dest), str(plugin)])
    return sorted(dest.glob("*.whl"))


if __name__ == "__main__":
    main()
