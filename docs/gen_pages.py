"""mkdocs-gen-files script: writes the generated reference pages into the site (see gen_ref.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_ref

for path, text in gen_ref.pages().items():
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)
