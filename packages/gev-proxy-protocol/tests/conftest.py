from __future__ import annotations

import os

import pytest
from gev_proxy_protocol.testing import haproxy_path


@pytest.fixture
def haproxy() -> str:
    """The haproxy binary (skipped without one, except in CI, where it must be installed)."""
    path = haproxy_path()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("haproxy must be installed in CI (tools/install-system-deps.sh)")
        pytest.skip("no haproxy on PATH (apt-get install haproxy)")
    return path
