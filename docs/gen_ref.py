"""The pages of the reference that are generated, not written: API, command line, changelogs.

``docs/gen_pages.py`` writes them into the site at build time (mkdocs-gen-files); the tests
import this module to check that the reference covers every public name. Everything is read from
the packages themselves, so a package, a public name or a ``gev serve`` option added later shows
up with no edit here:

* a *package* is a directory ``packages/<dist>/`` with ``src/<import_name>/__init__.py``;
* its *public modules* are the package itself and every submodule whose name has no leading
  underscore and that defines ``__all__`` -- except ``plugin`` (the entry point: hook
  implementations, which the hook reference covers) and ``hookspecs`` (the hook reference);
* the API page of a package renders, with mkdocstrings, every name in each public module's
  ``__all__``, grouped into classes, functions, exceptions and data;
* the command-line page documents the parser ``gev_core._cli.build_parser`` builds with the
  options of every installed plugin;
* the changelog page of a package is its ``CHANGELOG.md``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"

#: Submodules that are public by name but documented elsewhere (see the module docstring).
NOT_API = {"plugin", "hookspecs"}

#: Site paths of the generated pages (relative to docs/).
API_DIR = "reference/api"
CHANGELOG_DIR = "reference/changelog"
CLI_PAGE = "reference/cli.md"


@dataclass(frozen=True)
class Package:
    """One distribution of the monorepo."""

    dist: str  # gev-core
    module: str  # gev_core
    path: Path  # packages/gev-core

    @property
    def api_page(self) -> str:
        return f"{API_DIR}/{self.dist}.md"

    @property
    def changelog_page(self) -> str:
        return f"{CHANGELOG_DIR}/{self.dist}.md"


def packages() -> list[Package]:
    """Every package under ``packages/``, gev-core first, then by name."""
    found = []
    for path in sorted(PACKAGES.iterdir()):
        src = path / "src"
        if not src.is_dir():
            continue
        mods = [p.parent.name for p in src.glob("*/__init__.py")]
        if len(mods) == 1:
            found.append(Package(path.name, mods[0], path))
    return sorted(found, key=lambda p: (p.dist != "gev-core", p.dist))


def public_modules(package: Package) -> list[ModuleType]:
    """The package module and its public submodules that define ``__all__``."""
    root = importlib.import_module(package.module)
    mods = [root]
    for info in pkgutil.iter_modules(root.__path__):
        if info.name.startswith("_") or info.name in NOT_API:
            continue
        module = importlib.import_module(f"{package.module}.{info.name}")
        if hasattr(module, "__all__"):
            mods.append(module)
    return mods


KINDS = ("Classes", "Functions", "Exceptions", "Data")


def kind_of(obj: object) -> str:
    if inspect.isclass(obj):
        return "Exceptions" if issubclass(obj, BaseException) else "Classes"
    if callable(obj):
        return "Functions"
    return "Data"


def api_names(module: ModuleType) -> dict[str, list[str]]:
    """``__all__`` of ``module`` grouped by :data:`KINDS`, in ``__all__``'s order."""
    groups: dict[str, list[str]] = {k: [] for k in KINDS}
    for name in module.__all__:
        groups[kind_of(getattr(module, name))].append(name)
    return {k: v for k, v in groups.items() if v}


def _first_paragraph(module: ModuleType) -> str:
    doc = inspect.getdoc(module) or ""
    return doc.split("\n\n", 1)[0].strip()


def api_page(package: Package) -> str:
    """The API page of one package: every public name, rendered by mkdocstrings."""
    out = [
        f"# {package.dist}",
        "",
        f"`import {package.module}` · [changelog](../changelog/{package.dist}.md) ·"
        " [install](../../how-to/install.md)",
        "",
    ]
    for module in public_modules(package):
        level = "##"
        if module.__name__ != package.module:
            out += [f"## `{module.__name__}`", ""]
            level = "###"
        summary = _first_paragraph(module)
        if summary:
            out += [summary, ""]
        for kind, names in api_names(module).items():
            out += [f"{level} {kind}", ""]
            for name in names:
                out += [
                    f"::: {module.__name__}.{name}",
                    "    options:",
                    f"      heading_level: {len(level) + 1}",
                    "",
                ]
    return "\n".join(out)


def changelog_page(package: Package) -> str:
    path = package.path / "CHANGELOG.md"
    text = path.read_text() if path.exists() else f"# {package.dist}\n\nNo changelog yet.\n"
    return text


# ------------------------------------------------------------------------------ the gev command


def _rows(actions: list[argparse.Action]) -> list[str]:
    rows = ["| option | value | default | meaning |", "|---|---|---|---|"]
    for action in actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            flags = ", ".join(f"`{o}`" for o in action.option_strings)
        else:
            flags = f"`{action.metavar or action.dest}`"
        if action.choices is not None and not isinstance(action.choices, dict):
            value = " \\| ".join(f"`{c}`" for c in action.choices)
        elif action.nargs == 0:
            value = ""
        elif action.option_strings:
            value = f"`{action.metavar or action.dest.upper()}`"
        else:
            value = ""
        default = action.default
        shown = (
            ""
            if default in (None, False, argparse.SUPPRESS) or action.nargs == 0
            else f"`{default}`"
        )
        text = (action.help or "") % {
            "default": default,
            "prog": "",
            "dest": action.dest,
            "choices": action.choices,
        }
        repeat = " (repeatable)" if isinstance(action, argparse._AppendAction) else ""
        text = text.replace("|", "\\|")
        rows.append(f"| {flags} | {value} | {shown} | {text}{repeat} |")
    return rows


def _parser_section(parser: argparse.ArgumentParser, title: str, level: str) -> list[str]:
    out = [f"{level} `{title}`", ""]
    if parser.description:
        out += [parser.description, ""]
    usage = parser.format_usage().strip().removeprefix("usage: ")
    out += ["```text", usage, "```", ""]
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
        ]
        if not actions:
            continue
        name = group.title or "options"
        out += [f"**{name}**", ""]
        if group.description:
            out += [group.description, ""]
        out += [*_rows(actions), ""]
    return out


def cli_page() -> str:
    """Reference of the ``gev`` command with the options of every installed plugin."""
    from gev_core import get_plugin_manager
    from gev_core._cli import build_parser

    pm = get_plugin_manager()
    parser = build_parser(pm)
    out = [
        "# `gev` command",
        "",
        "Generated from the command's own parser, with the options of every plugin installed"
        " where the documentation was built. `gev COMMAND --help` prints the same for the"
        " plugins installed where you run it. See [Command line](../cli.md) for a tour.",
        "",
        *_parser_section(parser, "gev", "##"),
    ]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parser_section(sub, f"gev {name}", "##")
    return "\n".join(out)


def summary() -> str:
    """The navigation of the reference section (mkdocs-literate-nav)."""
    lines = ["* API"]
    lines += [f"    * [{p.dist}](api/{p.dist}.md)" for p in packages()]
    lines += [
        "* [Hooks](../hooks.md)",
        "* [gev command](cli.md)",
        "* Changelogs",
    ]
    lines += [f"    * [{p.dist}](changelog/{p.dist}.md)" for p in packages()]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """Every generated page: site path (relative to docs/) -> Markdown."""
    out = {p.api_page: api_page(p) for p in packages()}
    out.update({p.changelog_page: changelog_page(p) for p in packages()})
    out[CLI_PAGE] = cli_page()
    out["reference/SUMMARY.md"] = summary()
    return out
