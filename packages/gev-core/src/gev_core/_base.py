"""Interpreted bases of compiled classes. Never compiled (``tests/test_compiled.py`` checks).

An instance of a class compiled by mypyc has a fixed C layout without a ``__weakref__`` slot,
unless the class derives from an interpreted class: then mypyc gives it an instance dictionary
and weak-reference support. Applications keep connections in a ``weakref.WeakSet`` or a
``WeakKeyDictionary``, so :class:`~gev_core.Connection` and :class:`~gev_core.EventLoop` derive
from :class:`Weakrefable`. In the pure-Python build it is just an empty base, and the classes'
own ``__slots__`` name ``__weakref__``.

The base must stay exactly this: no slots, no attributes. mypyc lays the compiled class out as
if it derived from ``object``, so a base that added fields of its own would overlap them.
"""

from __future__ import annotations

__all__ = ["Weakrefable"]


class Weakrefable:
    """An empty base that lets compiled instances be weakly referenced (see the module)."""

    __slots__ = ()
