"""Fixtures shared by the WebSocket tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from gev_websocket import _fastpath, _session


@pytest.fixture(params=["native", "python"])
def unmasker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test once with the native unmask (when installed) and once with pure Python.

    The native one is the C kernel built into gev-websocket's platform wheels; without it (a
    pure wheel, a source checkout, ``GEV_PURE_PYTHON=1``) the fast path falls back to Python,
    and both must give the same bytes. The compiled test run (``GEV_EXPECT_COMPILED=1``)
    fails rather than skips when the kernel is missing.
    """
    if request.param == "python":
        monkeypatch.setattr(_fastpath, "_apply_mask", None)
        # The fast path's own reference (compiled, a module global read at each use).
        monkeypatch.setattr(_fastpath, "_unmask_frame", None)
        monkeypatch.setattr(_session, "_unmask_frame", None)
    elif _fastpath._apply_mask is None:
        if os.environ.get("GEV_EXPECT_COMPILED") == "1":
            pytest.fail("the native unmask is missing from a build that should have it")
        pytest.skip("the native unmask is not built here (pure install)")
    yield request.param
