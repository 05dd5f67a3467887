"""gev-ringbuffer: a growable byte ring buffer with a virtual-read cursor.

See :class:`RingBuffer` for the API and the package README for the growth and
shrink policy.
"""

# First: with GEV_PURE_PYTHON=1 the modules below are then loaded from their .py source.
from gev_ringbuffer import _compiled
from gev_ringbuffer.__about__ import __version__
from gev_ringbuffer._ring import (
    DOUBLING_LIMIT,
    MIN_CAPACITY,
    SHRINK_THRESHOLD,
    BytesLike,
    RingBuffer,
    RingBufferEmpty,
    RingBufferError,
    RingBufferOverflow,
)

COMPILED: bool = _compiled.package_is_compiled(__name__)
"""True when this package runs compiled code (a wheel built with a C compiler, and
``GEV_PURE_PYTHON`` not set); False for the pure-Python source. See the docs' "Compiled
code" page."""

__all__ = [
    "COMPILED",
    "DOUBLING_LIMIT",
    "MIN_CAPACITY",
    "SHRINK_THRESHOLD",
    "BytesLike",
    "RingBuffer",
    "RingBufferEmpty",
    "RingBufferError",
    "RingBufferOverflow",
    "__version__",
]
