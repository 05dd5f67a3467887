"""Check a built site: every public name of every package has its anchor in the API reference.

    python docs/check_site.py site

Run by ``hatch run docs:build`` after ``mkdocs build``. mkdocstrings gives each rendered object an
HTML id equal to its dotted path (``gev_core.Server``); a name listed in an ``__all__`` but missing
from the page (not rendered, or rendered under another path) fails the build here.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_ref


def main(site: Path) -> int:
    missing = []
    checked = 0
    for package in gen_ref.packages():
        page = site / package.api_page.removesuffix(".md") / "index.html"
        html = page.read_text() if page.exists() else ""
        for module in gen_ref.public_modules(package):
            for name in module.__all__:
                checked += 1
                if f'id="{module.__name__}.{name}"' not in html:
                    missing.append(f"{module.__name__}.{name} (expected in {page})")
    if missing:
        print("missing from the API reference:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    print(f"API reference: all {checked} public names present")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "site")))
