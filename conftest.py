from __future__ import annotations

import os

import pytest

# The fixtures third-party plugin authors get are the ones our own tests use.
pytest_plugins = ["gev_core.testing"]

# The slowest tests (measured: 10 s to 3 min each), slowest first. They are marked ``slow``
# here (``-m "not slow"`` leaves them out), and under pytest-xdist (``hatch test --parallel``)
# they are handed out first, so the run does not end on one worker finishing a long test while
# the others idle. A prefix matches every test it starts (a file, a parametrized test).
SLOWEST = [
    "tests/test_autobahn.py::",
    "tests/test_docs_snippets.py::test_page_code_runs[docs/how-to/install.md]",
    "tests/test_docs_snippets.py::test_page_code_runs[README.md]",
    "tests/test_docs_snippets.py::test_page_code_runs[docs/deploying.md]",
    "tests/test_pubsub_workers.py::",
    "packages/gev-core/tests/test_cli.py::test_sighup_replaces_the_workers",
    "tests/test_docs_snippets.py::test_page_code_runs[docs/plugins.md]",
    "tests/test_bench_charts.py::test_the_published_data_renders",
    "tests/test_docs_snippets.py::test_page_code_runs[docs/tutorial/4-gev-serve.md]",
    "packages/gev-metrics/tests/test_prometheus.py::",
    "packages/gev-pubsub/tests/test_fanout.py::test_slow_subscriber",
    "packages/gev-metrics/tests/test_workers.py::",
    "packages/gev-core/tests/test_cli.py::test_workers_share_the_port",
    "packages/gev-websocket/tests/test_differential.py::",
    "tests/test_behind_haproxy.py::",
    "tests/test_docs_snippets.py::test_page_code_runs",
    "packages/gev-core/tests/test_cli.py::test_a_reload_with_broken_code",
    "packages/gev-core/tests/test_reorder.py::test_any_completion_order",
    "packages/gev-timers/tests/test_properties.py::",
    "packages/gev-core/tests/test_cli.py::test_workers_share_a_unix_socket",
    "tests/test_bench_charts.py::",
    "packages/gev-pubsub/tests/test_redis.py::",
]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist's load scheduling (``-n``) hands each worker a quarter of its share of the
    # tests in one contiguous chunk at the start unless told otherwise: every slow test first
    # in the order below would then land on the first worker. One at a time (two at the
    # start) keeps them apart. An explicit --maxschedchunk wins.
    if getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1


def _rank(item: pytest.Item) -> int:
    for rank, prefix in enumerate(SLOWEST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(SLOWEST) if item.get_closest_marker("slow") else len(SLOWEST) + 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ranks = {item.nodeid: _rank(item) for item in items}
    for item in items:
        if ranks[item.nodeid] < len(SLOWEST):
            item.add_marker(pytest.mark.slow)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a plain run keeps the files' order
    # Every worker computes the same order (xdist checks). The slow tests go first, each
    # followed by a quick one: xdist starts each worker with two tests, and two slow ones in
    # the same hand would run one after the other on one worker.
    slow = [i for i in items if ranks[i.nodeid] <= len(SLOWEST)]
    slow.sort(key=lambda i: ranks[i.nodeid])
    quick = [i for i in items if ranks[i.nodeid] > len(SLOWEST)]
    ordered: list[pytest.Item] = []
    for n, item in enumerate(slow):
        ordered.append(item)
        if n < len(quick):
            ordered.append(quick[n])
    ordered.extend(quick[len(slow) :])
    items[:] = ordered
