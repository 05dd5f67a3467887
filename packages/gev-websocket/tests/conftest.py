"""Fixtures shared by the WebSocket tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gev_websocket import _fastpath


@pytest.fixture(params=["native", "python"])
def unmasker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test once with the native unmask (when installed) and once with pure Python.

    The native one comes from the optional ``speedups`` extra; without it the fast path
    falls back to Python, and both must give the same bytes.
    """
    if request.param == "python":
        monkeypatch.setattr(_fastpath, "_apply_mask", None)
    elif _fastpath._apply_mask is None:
        pytest.skip("the native unmask (gev-websocket[speedups]) is not installed")
    yield request.param
