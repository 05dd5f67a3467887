"""``python -m gev_core ...`` is the ``gev`` command (and how the supervisor starts workers)."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
