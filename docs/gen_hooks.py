"""Regenerate docs/hooks.md from gev_core.hookspecs: ``python docs/gen_hooks.py``.

The docstrings in hookspecs.py are the reference; this only lays them out. tests/test_docs.py
fails when a hook is missing here or its signature differs.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from gev_core import hookspecs

HEADER = """# Hook reference

Every hook a gev plugin can implement. Mark implementations with `@gev_core.hookimpl` and
advertise the module under the `gev` entry-point group (see [Writing a plugin](plugins.md)).
An implementation may accept any subset of a hook's arguments, by name.

This page is generated from `gev_core/hookspecs.py` by `docs/gen_hooks.py`.
"""


def signature(fn) -> str:
    return f"{fn.__name__}({', '.join(inspect.signature(fn).parameters)})"


def full_signature(fn) -> str:
    # Annotations are strings (postponed evaluation): print them as written, unquoted.
    sig = inspect.signature(fn)
    params = ", ".join(
        f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name
        for p in sig.parameters.values()
    )
    return f"def {fn.__name__}({params}) -> {sig.return_annotation}"


def flags(fn) -> str:
    opts = getattr(fn, "gev_spec", {}) or {}
    marks = [name for name in ("firstresult", "historic") if opts.get(name)]
    return f" *({', '.join(marks)})*" if marks else ""


def render() -> str:
    out = [HEADER]
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("gev_"):
            continue
        out.append(f"## `{signature(fn)}`{flags(fn)}\n")
        out.append(f"<!-- snippet: signature -->\n```python\n{full_signature(fn)}\n```\n")
        out.append(inspect.cleandoc(fn.__doc__ or "") + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    target = Path(__file__).with_name("hooks.md")
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if target.read_text() == text else 1)
    target.write_text(text)
