"""gev-ringbuffer: a growable byte ring buffer with a virtual-read cursor.

See :class:`RingBuffer` for the API and the package README for the growth and
shrink policy.
"""

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

__all__ = [
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
