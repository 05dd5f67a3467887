"""Griffe extensions that read our Sphinx-flavoured source the way Sphinx would.

``SphinxComments``: ``#:`` comments right above an assignment (or after it on the same line) are
that attribute's documentation, as for Sphinx's autodoc (``#: The bound port.``); griffe only
knows docstrings below the assignment.

``SphinxRoles``: turn the Sphinx roles of our docstrings into mkdocstrings cross-references.

The docstrings are written in reST field style (``:param x:``), which mkdocstrings' Sphinx parser
reads; inline roles such as ``:class:`~gev_core.Server``` it leaves as text. This rewrites each
role into a link (``[`Server`][gev_core.Server]``) when the target resolves to one of our objects,
and into inline code otherwise, so a role never shows up raw and never breaks the strict build.
Private module paths (``gev_core._server.Server``) are mapped to the public name the package
re-exports, which is where the reference renders it.
"""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|data|exc|mod|obj|const):`([^`]+)`")
_PACKAGES = Path(__file__).resolve().parent.parent / "packages"
#: Import names of the monorepo's packages: only their objects are rendered, so only they link.
OURS = frozenset(p.parent.name for p in _PACKAGES.glob("*/src/*/__init__.py"))


#: Modules the API reference does not render (the hook reference covers them): no link target.
_NOT_RENDERED = {"hookspecs", "plugin"}


def _ours(path: str) -> bool:
    return path.split(".", 1)[0] in OURS


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, pkg, set())

    def _walk(self, obj: griffe.Object, pkg: griffe.Module, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(lambda m: self._link(obj, pkg, m), obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, pkg, seen)  # type: ignore[arg-type]

    def _link(self, obj: griffe.Object, pkg: griffe.Module, m: re.Match[str]) -> str:
        role, text = m.groups()
        title, _, explicit = text.partition(" <")
        target = explicit.rstrip(">") if explicit else title
        short = target.startswith("~")
        target = target.lstrip("~.")
        label = target.rsplit(".", 1)[-1] if short else title.lstrip("~.")
        if role in ("func", "meth"):
            label += "()"
        path = self._resolve(obj, target)
        if path is None or _NOT_RENDERED & set(path.split(".")):
            return f"`{label}`"
        public = self._public(pkg, path)
        if any(p.startswith("_") and not p.startswith("__") for p in public.split(".")):
            return f"`{label}`"  # private: not rendered, nothing to link to
        return f"[`{label}`][{public}]"

    @staticmethod
    def _resolve(obj: griffe.Object, target: str) -> str | None:
        if "." in target and _ours(target):
            return target
        scope: griffe.Object | None = obj
        while scope is not None:
            try:
                path = scope.resolve(target)
            except (griffe.NameResolutionError, Exception):
                path = None
            if path and _ours(path):
                return path
            scope = scope.parent
        return None

    @staticmethod
    def _public(pkg: griffe.Module, path: str) -> str:
        # gev_core._server.Server.stop -> gev_core.Server.stop when gev_core exports Server.
        parts = path.split(".")
        exports = _exports(parts[0]) if parts[0] != pkg.name else set(pkg.exports or ())
        for i, part in enumerate(parts[1:], start=1):
            private = part.startswith("_") and not part.startswith("__")
            if private and i + 1 < len(parts) and parts[i + 1] in exports:
                return ".".join([parts[0], *parts[i + 1 :]])
        return path


@cache
def _exports(package: str) -> set[str]:
    try:
        return set(getattr(importlib.import_module(package), "__all__", ()))
    except Exception:
        return set()
@cache
def _lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


class SphinxComments(griffe.Extension):
    def on_attribute_instance(
        self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute, **kwargs: Any
    ) -> None:
        if attr.docstring is not None or not isinstance(node, (ast.Assign, ast.AnnAssign)):
            return
        try:
            lines = _lines(str(attr.filepath))
        except (OSError, TypeError):
            return
        first = node.lineno - 1
        comment: list[str] = []
        i = first - 1
        while i >= 0 and lines[i].strip().startswith("#:"):
            comment.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        if not comment:
            _, sep, trailing = lines[first].partition("#:")
            if sep:
                comment = [trailing.strip()]
        if comment:
            attr.docstring = griffe.Docstring(
                "\n".join(comment), lineno=i + 2, endlineno=first, parent=attr
            )
