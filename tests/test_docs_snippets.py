"""Every fenced code block of docs/ and README.md runs here (conventions: tests/snippets.py).

One test per page runs its blocks in order; a block that drifts from the API fails it with the
file and line of the block. Blocks marked ``skip`` show up as skipped tests with their reason.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "gev_doc_snippets", Path(__file__).with_name("snippets.py")
)
assert _spec is not None and _spec.loader is not None
snippets = importlib.util.module_from_spec(_spec)
sys.modules["gev_doc_snippets"] = snippets
_spec.loader.exec_module(snippets)

PAGES = snippets.doc_files()
ROOT = snippets.ROOT


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_page_blocks_parse_and_declare_what_they_are(page: Path) -> None:
    for block in snippets.parse(page):
        snippets.check_static(block)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("GEV_EXPECT_COMPILED") == "1",
    reason="the docs run once, in the source-tree suite (hatch test), not again for the compiled"
    " build",
)
@pytest.mark.parametrize("page", [p for p in PAGES if snippets.parse(p)], ids=_id)
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    skipped = snippets.run_page(page, tmp_path)
    if skipped:
        pytest.skip("; ".join(skipped))


@pytest.mark.parametrize("block", snippets.skipped_blocks(), ids=lambda b: b.where)
def test_blocks_marked_skip(block: object) -> None:
    pytest.skip(f"{block.where}: {block.arg}")  # type: ignore[attr-defined]


def test_the_harness_finds_blocks_everywhere() -> None:
    # A parser that silently found nothing would make every page pass.
    counts = {_id(p): len(snippets.parse(p)) for p in PAGES}
    assert sum(counts.values()) >= 40, counts
    assert counts["README.md"] >= 2
