"""Every Python block of docs/pubsub.md runs (as a module imported, not as __main__: a block
that starts a server guards it with ``if __name__ == "__main__"``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("gev_pubsub")
pytest.importorskip("gev_websocket")

PAGE = Path(__file__).resolve().parent.parent / "docs" / "pubsub.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def test_the_page_has_python_blocks() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs(index: int) -> None:
    namespace: dict[str, object] = {"__name__": "docs_pubsub"}
    exec(compile(BLOCKS[index], f"{PAGE.name}[{index}]", "exec"), namespace)
    hub = namespace.get("hub")
    close = getattr(hub, "close", None)
    if callable(close):
        close()  # a bridge started by the block
