from __future__ import annotations

import os
import sys

# The tests import their shared helpers (metrics_support) by name.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
