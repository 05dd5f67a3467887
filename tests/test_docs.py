"""The references are complete: every hook with its signature (datasette's rule), every public
name of every package with a docstring, every ``gev serve`` option."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from gev_core import get_plugin_manager, hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_hook_is_documented_with_its_signature():
    reference = (DOCS / "hooks.md").read_text()
    pm = get_plugin_manager(autoload=False)
    hooks = [name for name in dir(pm.hook) if name.startswith("gev_")]
    assert len(hooks) >= 10
    for name in hooks:
        spec = getattr(hookspecs, name)
        args = ", ".join(inspect.signature(spec).parameters)
        assert f"## `{name}({args})`" in reference, f"missing from docs/hooks.md: {name}({args})"


def test_hook_reference_is_up_to_date_with_the_docstrings():
    proc = subprocess.run(
        [sys.executable, str(DOCS / "gen_hooks.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, "docs/hooks.md is stale: run python docs/gen_hooks.py"


def test_every_hookspec_has_a_docstring_and_the_gev_prefix():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if fn.__module__ != hookspecs.__name__:
            continue
        assert name.startswith("gev_"), name
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40, f"{name} needs a real docstring"


# --------------------------------------------------------------------- the generated reference

_spec = importlib.util.spec_from_file_location("gen_ref", DOCS / "gen_ref.py")
assert _spec is not None and _spec.loader is not None
gen_ref = importlib.util.module_from_spec(_spec)
sys.modules["gen_ref"] = gen_ref
_spec.loader.exec_module(gen_ref)

PUBLIC = [
    (module.__name__, name)
    for package in gen_ref.packages()
    for module in gen_ref.public_modules(package)
    for name in module.__all__
]


def test_the_reference_covers_every_package() -> None:
    names = {p.dist for p in gen_ref.packages()}
    assert {"gev-core", "gev-ringbuffer", "gev-timers", "gev-protobuf", "gev-websocket"} <= names
    assert len(PUBLIC) >= 80


@pytest.fixture(scope="module")
def griffe_packages() -> dict[str, object]:
    griffe = pytest.importorskip("griffe")
    paths = [str(p.path / "src") for p in gen_ref.packages()]
    # The extensions the site is built with: ``#:`` comments document data.
    extensions = griffe.load_extensions(f"{DOCS / 'griffe_sphinx.py'}:SphinxComments")
    return {
        p.module: griffe.load(
            p.module, search_paths=paths, resolve_aliases=True, extensions=extensions
        )
        for p in gen_ref.packages()
    }


@pytest.mark.parametrize("module, name", PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_every_public_name_has_a_docstring_and_a_place_in_the_reference(
    module: str, name: str, griffe_packages: dict[str, object]
) -> None:
    # Static, as mkdocstrings sees it: data names need a docstring right after the assignment.
    root = griffe_packages[module.split(".")[0]]
    obj = root[f"{module.removeprefix(root.name + '.')}.{name}" if "." in module else name]
    target = obj.final_target if obj.is_alias else obj
    assert target.docstring is not None and target.docstring.value.strip(), (
        f"{module}.{name} has no docstring (for data: a string literal right after it)"
    )
    package = next(p for p in gen_ref.packages() if p.module == module.split(".")[0])
    assert f"::: {module}.{name}\n" in gen_ref.api_page(package)


def test_the_cli_reference_has_every_option_of_gev_serve_with_the_plugins() -> None:
    from gev_core import get_plugin_manager
    from gev_core._cli import build_parser

    page = gen_ref.cli_page()
    parser = build_parser(get_plugin_manager())
    serve = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "serve"
    ]
    flags = [o for a in serve._actions if a.help != argparse.SUPPRESS for o in a.option_strings]
    assert "--idle-time" in flags and any(f.startswith("--ws-") for f in flags)
    for flag in flags:
        assert f"`{flag}`" in page, f"gev serve {flag} is missing from the CLI reference"
    assert "## `gev plugins`" in page


def test_every_public_module_with_an_all_is_in_the_reference() -> None:
    # A public submodule (no leading underscore) becomes API by defining __all__.
    for package in gen_ref.packages():
        page = gen_ref.api_page(package)
        for module in gen_ref.public_modules(package)[1:]:
            assert f"## `{module.__name__}`" in page
