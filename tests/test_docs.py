"""The hook reference documents every hook with its exact signature (datasette's rule)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

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
