from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from gev_core.testing import RedisServer, redis_server_path

# The tests import their shared helpers (pubsub_support) by name.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on an ephemeral port (skipped without one, except in CI)."""
    if redis_server_path() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server must be installed in CI (tools/install-system-deps.sh)")
        pytest.skip("no redis-server on PATH (apt-get install redis-server)")
    with RedisServer() as server:
        yield server
