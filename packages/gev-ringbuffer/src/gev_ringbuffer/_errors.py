"""Errors raised by :class:`~gev_ringbuffer.RingBuffer`.

Kept out of the compiled ``_ring`` module: exception classes are caught and subclassed by
callers, and mypyc cannot compile a class that also derives from a builtin like ``BufferError``.
"""

from __future__ import annotations

__all__ = ["RingBufferEmpty", "RingBufferError", "RingBufferOverflow"]


class RingBufferError(Exception):
    """Base class for ring buffer errors."""


class RingBufferEmpty(RingBufferError, IndexError):
    """Raised by :meth:`RingBuffer.read_byte` when there is nothing to read."""


class RingBufferOverflow(RingBufferError, BufferError):
    """Raised when a write would make the buffer exceed its ``max_capacity``.

    The buffer is left exactly as it was before the failing call.
    """
