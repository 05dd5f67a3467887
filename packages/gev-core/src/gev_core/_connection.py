"""One accepted TCP connection: its fd, its buffers, its place in the loop.

Rules of this file:

* Every method whose name starts with ``_`` runs on the connection's loop thread only. The public
  methods (``send``, ``write``, ``close``, ``shutdown_write``, ``abort``) may be called from any
  thread: off the loop they are queued to it (one wake-up per batch); on the loop, while the loop is
  dispatching a batch of I/O events, they are deferred to the end of that batch, which is what makes
  a reply returned from ``on_message`` leave before anything ``send`` was asked to send inside it.
  ``send`` queues the object itself: the protocol's ``pack`` runs on the loop thread, in order, so
  a protocol with per-connection state (a compressor, sequence numbers) needs no lock.
* Closing is graceful: once the output is flushed we send FIN and read (discarding) until the
  peer's FIN, at most the loop's ``linger_timeout``. Closing a socket with unread input makes the
  kernel answer with RST, which can destroy our last bytes before the peer has read them.
* What a connection buffers (its two ring buffers, plus what its protocol reports holding) is
  accounted to the loop after every change on the slow paths, so that the loop can shed the
  largest holders when the server-wide budget is exceeded (``_account``).
* The common case -- no unparsed input, no pending output -- never reaches this file: the loop
  reads, calls the handler (``_fast``: the default protocol) or the protocol's ``receive``
  (``_direct``: a protocol that accepts ``bytes``) and writes inline. Everything here is the
  uncommon case: leftovers, backlogs, backpressure, other protocols, shutdown and close.
* Buffered sizes are O(1) to read: both buffers are ring buffers with their own length.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from gev_ringbuffer import RingBuffer

from ._bind import format_address
from ._errors import ConnectionClosed, ProtocolError
from ._poll import ERROR, READ, WRITE

if TYPE_CHECKING:
    from ._loop import EventLoop, TimerHandle
    from ._protocol import Protocol

logger = logging.getLogger("gev")

# Connection states. CLOSING: no more reads or new writes; pending output drains. LINGERING: our
# FIN is sent; input is read and discarded until the peer's FIN (or the linger timeout), then the
# fd closes.
OPEN, CLOSING, LINGERING, CLOSED = 0, 1, 2, 3

_UNREGISTERED = -1


class Connection:
    """A TCP connection served by a gev loop.

    Handlers receive it in every callback. ``context`` is a free slot for the application;
    ``set``/``get``/``delete`` offer a small thread-safe key-value store beside it.
    """

    __slots__ = (
        "__weakref__",
        "_accounted",
        "_addr",
        "_direct",
        "_eof",
        "_fast",
        "_fd",
        "_held",
        "_in",
        "_kv",
        "_linger_timer",
        "_loop",
        "_mask",
        "_out",
        "_paused",
        "_protocol",
        "_shut",
        "_state",
        "_yielded",
        "context",
        "handler",
        "last_active",
        "state",
    )

    def __init__(
        self,
        fd: int,
        addr: Any,
        loop: EventLoop,
        handler: Any,
        protocol: Protocol,
    ) -> None:
        self._fd = fd
        self._addr = addr
        self._loop = loop
        self.handler = handler
        self._protocol = protocol
        #: Per-connection state owned by the protocol (e.g. a WebSocket session).
        self.state: Any = None
        #: Free for the application, like gev's ``Context()``; touch it on the loop thread.
        self.context: Any = None
        #: The loop's clock reading at the last read or write (kept for idle reaping).
        self.last_active = loop.now
        self._kv: dict[str, Any] | None = None
        self._in: RingBuffer | None = None
        self._out: RingBuffer | None = None
        self._state = OPEN
        self._paused = False
        self._shut = False
        #: The peer sent FIN: closing needs no lingering.
        self._eof = False
        #: The protocol stopped early (``continue_later``): reading waits until it resumed.
        self._yielded = False
        #: Bytes the protocol holds for this connection (``report_buffered``), and the total
        #: last accounted to the loop.
        self._held = 0
        self._accounted = 0
        self._linger_timer: TimerHandle | None = None
        self._mask = _UNREGISTERED
        self._refresh_paths()

    # ------------------------------------------------------------------ public, any thread

    @property
    def loop(self) -> EventLoop:
        return self._loop

    @property
    def protocol(self) -> Protocol:
        """The frame codec serving this connection (a plugin may swap it on the first bytes)."""
        return self._protocol

    @protocol.setter
    def protocol(self, protocol: Protocol) -> None:
        self._protocol = protocol
        self._refresh_paths()

    @property
    def connected(self) -> bool:
        """True until the connection starts closing."""
        return self._state == OPEN

    @property
    def closing(self) -> bool:
        """True once ``close`` was called or the peer went away."""
        return self._state != OPEN

    @property
    def peer_addr(self) -> str:
        """The peer as ``"ip:port"`` (``"[ip]:port"`` for IPv6).

        On a Unix socket: ``"unix:"`` for the usual unnamed client, else ``"unix:/its/path"``
        or ``"unix:@name"``.
        """
        addr = self._addr
        if isinstance(addr, tuple) and len(addr) >= 2:
            host = addr[0]
            return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
        return format_address(addr)

    @property
    def remote_address(self) -> Any:
        """The peer address as the socket module gives it, e.g. ``("127.0.0.1", 51234)``."""
        return self._addr

    @property
    def read_buffer_length(self) -> int:
        """Bytes received but not yet parsed into a message."""
        buf = self._in
        return len(buf) if buf is not None else 0

    @property
    def write_buffer_length(self) -> int:
        """Bytes accepted for sending that the kernel has not taken yet."""
        buf = self._out
        return len(buf) if buf is not None else 0

    @property
    def buffered(self) -> int:
        """Bytes buffered for this connection, as counted against ``Server.max_buffered``: its
        read and write buffers plus what its protocol reports holding (``report_buffered``)."""
        return self._accounted

    def fileno(self) -> int:
        return self._fd

    def send(self, data: Any) -> None:
        """Frame ``data`` with the connection's protocol and send it. Safe from any thread.

        ``data`` is queued to the connection's loop, where the protocol's ``pack`` frames it:
        sends leave in the order they were made (per thread), and inside ``on_message`` after
        the reply it returns. ``bytearray`` and ``memoryview`` arguments are copied when queued;
        other objects are handed to ``pack`` as they are, so don't change them afterwards. On
        the loop thread outside a batch of events (a timer, a task) ``pack`` runs at once and
        its errors reach the caller; a queued send that ``pack`` refuses closes the connection,
        with the traceback logged. A send still queued when the connection closes is dropped.

        :raises ConnectionClosed: the connection is already closing or closed.
        """
        if self._state != OPEN:
            raise ConnectionClosed(f"{self!r} is closed")
        loop = self._loop
        if loop._thread_id == threading.get_ident():
            if loop._dispatching:
                loop._deferred.append((self._send_queued, _frozen(data)))
            else:
                frame = self._protocol.pack(self, data)
                if frame:
                    self._write(frame)
        else:
            loop.call_soon_threadsafe(self._send_queued, _frozen(data))

    def write(self, data: Any) -> None:
        """Send raw bytes, bypassing the protocol's ``pack``. Safe from any thread.

        ``bytearray`` and ``memoryview`` arguments are copied when the write has to wait, so the
        caller may reuse them as soon as this returns.
        """
        if self._state != OPEN:
            raise ConnectionClosed(f"{self!r} is closed")
        loop = self._loop
        if loop._thread_id == threading.get_ident():
            if loop._dispatching:
                loop._deferred.append((self._write, _owned(data)))
            else:
                self._write(data)
        else:
            loop.call_soon_threadsafe(self._write, _owned(data))

    def close(self) -> None:
        """Close once everything already sent is flushed. Safe from any thread; idempotent."""
        self._loop_call(self._close)

    def abort(self) -> None:
        """Close at once, dropping pending output. Safe from any thread; idempotent."""
        self._loop_call(self._abort)

    def continue_later(self) -> None:
        """Called by a protocol's ``receive`` that stops before the end of its input on purpose.

        To bound the work one connection does per loop iteration (messages dispatched, bytes
        inflated), ``receive`` may return having consumed less than it could, after calling
        this. The loop then hands the unconsumed bytes to ``receive`` again in its next
        iteration, after the other connections' events, without waiting for the socket to
        become readable; reading from the socket waits meanwhile. Loop thread only.
        """
        self._yielded = True

    def report_buffered(self, nbytes: int) -> None:
        """Tell the server how many bytes the protocol holds for this connection.

        For memory a protocol keeps outside the connection's own buffers (a WebSocket message
        arriving in fragments, decompressed data): it counts against the server-wide
        ``max_buffered`` budget like the read and write buffers. Report the new total whenever
        it changes; it is forgotten when the connection closes. Loop thread only.
        """
        self._held = nbytes
        if self._state != CLOSED:
            self._account()

    def shutdown_write(self) -> None:
        """Send FIN once pending output has been flushed (gev dropped it). Safe from any thread.

        Reading goes on until the peer closes, then ``on_close`` runs as usual.
        """
        self._loop_call(self._shutdown_write)

    def run_after(self, delay: float, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on this connection's loop in ``delay`` seconds, unless it has closed.

        Returns a timer with ``cancel()``. Needs a timer plugin (gev-timers).
        """
        return self._loop.server.timers.conn_run_after(self, delay, fn, *args)

    def set(self, key: str, value: Any) -> None:
        kv = self._kv
        if kv is None:
            kv = self._kv = {}
        kv[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        kv = self._kv
        return default if kv is None else kv.get(key, default)

    def delete(self, key: str) -> None:
        kv = self._kv
        if kv is not None:
            kv.pop(key, None)

    def __repr__(self) -> str:
        state = ("open", "closing", "lingering", "closed")[self._state]
        return (
            f"<Connection fd={self._fd} peer={self.peer_addr} {state}"
            f" in={self.read_buffer_length} out={self.write_buffer_length}"
            f"{' paused' if self._paused else ''}>"
        )

    # ------------------------------------------------------------------ loop thread only

    def _loop_call(self, fn: Any) -> None:
        loop = self._loop
        if loop._thread_id == threading.get_ident():
            if loop._dispatching:
                loop._deferred.append((fn, None))
            else:
                fn(None)
        else:
            loop.call_soon_threadsafe(fn, None)

    def _refresh_paths(self) -> None:
        # Which inline read path the loop may take: none while input is left over, output is
        # backlogged or the connection is closing.
        idle = self._state == OPEN and self._in is None and self._out is None
        protocol = self._protocol
        self._fast = fast = idle and protocol is self._loop._fast_protocol
        self._direct = idle and not fast and getattr(protocol, "accepts_bytes", False) is True

    def _interest(self) -> int:
        mask = 0
        state = self._state
        if state == OPEN:
            # _yielded alone may be stale (continue_later, then everything consumed after all):
            # only input actually waiting for its turn keeps the socket unread.
            if not self._paused and not (self._yielded and self._in is not None):
                mask = READ
        elif state == LINGERING:
            mask = READ  # to discard, until the peer's FIN
        if self._out is not None:
            mask |= WRITE
        return mask

    def _update_interest(self) -> None:
        old = self._mask
        if old == _UNREGISTERED or self._state == CLOSED:
            return
        new = self._interest()
        if new != old:
            self._mask = new
            self._loop._poller.modify(self._fd, new)

    def _on_event(self, ev: int) -> None:
        if ev & WRITE:
            self._on_writable()
        if ev & READ:
            self._on_readable()
        elif ev & ERROR and self._state != CLOSED and not ev & WRITE:
            # Hang-up or error with nothing readable: nobody will ever take our output.
            self._abort(None)

    def _on_readable(self) -> None:
        # The loop calls this directly for a plain READ event: check what _on_event would have.
        if self._state != OPEN or self._paused:
            if self._state == LINGERING:
                self._discard_input()
            return
        loop = self._loop
        fd = self._fd
        try:
            n = os.readv(fd, loop._rbufs)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._abort(exc)
            return
        if n == 0:
            self._on_eof()
            return
        self.last_active = loop.now
        out = loop._out
        inbuf = self._in
        try:
            if inbuf is None:
                view = loop._rview[:n]
                try:
                    consumed = self._protocol.receive(self, view, out)
                    if consumed < n and self._state == OPEN:
                        inbuf = self._in = RingBuffer()
                        inbuf.write(view[consumed:])
                finally:
                    view.release()
            else:
                if len(inbuf) + n > loop.max_read_buffer:
                    raise ProtocolError(
                        f"{len(inbuf) + n} unparsed bytes would exceed max_read_buffer"
                        f" {loop.max_read_buffer}"
                    )
                chunk = loop._rview[:n]
                inbuf.write(chunk)
                chunk.release()
                self._receive_buffered(inbuf, out)
        except Exception as exc:
            self._receive_failed(exc)
            return
        self._after_receive(out)

    def _resume_input(self) -> None:
        # The loop's next iteration after continue_later: the rest of the input, no read.
        self._yielded = False
        inbuf = self._in
        if self._state != OPEN or inbuf is None:
            self._update_interest()
            return
        if self._paused:
            # Output backpressure: go on once it drains (_unpause puts us back in line).
            self._yielded = True
            return
        out = self._loop._out
        try:
            self._receive_buffered(inbuf, out)
        except Exception as exc:
            self._receive_failed(exc)
            return
        self._after_receive(out)

    def _receive_buffered(self, inbuf: RingBuffer, out: list[Any]) -> None:
        view = inbuf.linear_view()
        try:
            consumed = self._protocol.receive(self, view, out)
        finally:
            view.release()
        inbuf.retrieve(consumed)
        if not inbuf:
            self._in = None

    def _after_receive(self, out: list[Any]) -> None:
        # Send what receive produced, then decide how this connection is read next.
        if out:
            try:
                data = out[0] if len(out) == 1 else b"".join(out)
                if self._state != CLOSED:
                    self._write(data)
            except Exception as exc:  # a reply that is not bytes-like
                self._receive_failed(exc)
                return
            out.clear()
        if self._yielded:
            self._yield_turn()
        else:
            self._update_interest()  # reading again after a resumed turn
        self._refresh_paths()
        if self._state != CLOSED:
            self._account()

    def _yield_turn(self) -> None:
        # The protocol called continue_later: queue the rest of the input for the loop's next
        # iteration and stop reading meanwhile. Nothing left over: nothing to wait for.
        if self._in is not None and self._state == OPEN:
            if not self._paused:
                self._loop._queue_ready(self)
        else:
            self._yielded = False
        self._update_interest()

    def _account(self) -> None:
        # Report what this connection buffers now to its loop; past the budget, the loop sheds
        # the largest holders (possibly this one: callers do nothing after this).
        size = self._held
        inbuf = self._in
        if inbuf is not None:
            size += len(inbuf)
        out = self._out
        if out is not None:
            size += len(out)
        old = self._accounted
        if size == old:
            return
        self._accounted = size
        loop = self._loop
        loop._buffered += size - old
        if not size:
            loop._holders.discard(self)
            return
        if not old:
            loop._holders.add(self)
        if size > old and loop._buffered > loop.max_buffered:
            loop._shed()

    def _receive_failed(self, exc: Exception) -> None:
        # Called from inside the except block, so logger.exception finds the traceback.
        self._loop._out.clear()
        if isinstance(exc, ProtocolError):
            logger.warning("closing %r: %s", self, exc)
        else:
            logger.exception("closing %r: protocol or handler failed", self)
        self._abort(None)

    def _keep(self, data: bytes, consumed: int) -> None:
        # The loop's direct path left part of a read unparsed: buffer it for the next read (or
        # for the next iteration, if the protocol stopped early).
        if self._state == OPEN:
            inbuf = self._in = RingBuffer()
            inbuf.write(memoryview(data)[consumed:])
            self._direct = False
            if self._yielded:
                self._yield_turn()
            self._account()

    def _on_eof(self) -> None:
        # The peer will send nothing more; flush what we owe it, then close (no lingering).
        self._eof = True
        self._close(None)

    def _send_queued(self, data: Any) -> None:
        # A send made off the loop or during a batch: framed here, on the loop, in order.
        if self._state != OPEN:
            return
        try:
            frame = self._protocol.pack(self, data)
        except Exception:
            logger.exception(
                "closing %r: its protocol could not frame a %s given to send()",
                self,
                type(data).__name__,
            )
            self._abort(None)
            return
        if frame:  # b"": the protocol has nothing to send (yet, or any more)
            self._write(frame)

    def _write(self, data: Any) -> None:
        if self._state >= LINGERING:
            return
        if self._out is not None:
            self._buffer(data, 0)
            return
        try:
            n = os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._abort(exc)
            return
        self.last_active = self._loop.now
        if n != len(data):
            self._buffer(data, n)

    def _buffer(self, data: Any, offset: int) -> None:
        out = self._out
        if out is None:
            out = self._out = RingBuffer()
            self._fast = self._direct = False
        mv = memoryview(data)
        if mv.itemsize != 1 or mv.ndim != 1:
            mv = mv.cast("B")
        out.write(mv[offset:] if offset else mv)
        loop = self._loop
        size = len(out)
        if size > loop.max_write_buffer:
            logger.warning(
                "closing %r: %d bytes of unsent output exceed max_write_buffer %d"
                " (the peer is not reading)",
                self,
                size,
                loop.max_write_buffer,
            )
            self._abort(None)
            return
        if size > loop.high_water and not self._paused:
            self._paused = True
        self._update_interest()
        self._account()

    def _on_writable(self) -> None:
        out = self._out
        if out is None or self._state == CLOSED:
            return
        first, second = out.peek_all()
        try:
            n = os.writev(self._fd, (first, second)) if second else os.write(self._fd, first)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._abort(exc)
            return
        finally:
            first.release()
            second.release()
        self.last_active = self._loop.now
        out.retrieve(n)
        if out:
            if self._paused and len(out) <= self._loop.low_water:
                self._unpause()
            self._account()
            return
        self._out = None
        if self._state == CLOSING:
            self._flushed_for_close()
            return
        if self._paused:
            self._unpause()
        if self._shut:
            self._do_shutdown()
        self._update_interest()
        self._refresh_paths()
        self._account()

    def _unpause(self) -> None:
        self._paused = False
        if self._yielded and self._state == OPEN:
            self._loop._queue_ready(self)  # input left waiting while the output drained
        self._update_interest()

    def _shutdown_write(self, _: Any = None) -> None:
        if self._state == CLOSED or self._shut:
            return
        self._shut = True
        if self._out is None:
            self._do_shutdown()

    def _do_shutdown(self) -> None:
        sock = socket.socket(fileno=self._fd)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.detach()

    def _close(self, _: Any = None) -> None:
        if self._state != OPEN:
            return
        self._in = None
        self._yielded = False
        self._state = CLOSING
        self._fast = self._direct = False
        if self._out is None:
            self._flushed_for_close()
            return
        self._update_interest()
        self._account()

    def _flushed_for_close(self) -> None:
        # Everything we owe the peer is with the kernel. If the peer has not closed its side,
        # send FIN and discard its input until it does: closing a socket with unread input
        # would answer with RST, which may destroy our last bytes before the peer reads them.
        loop = self._loop
        if self._eof or loop.linger_timeout <= 0:
            self._finalize(None)
            return
        self._state = LINGERING
        if not self._shut:
            self._shut = True
            self._do_shutdown()
        self._linger_timer = loop.call_later(loop.linger_timeout, self._linger_expired)
        self._update_interest()
        self._account()

    def _discard_input(self) -> None:
        try:
            n = os.readv(self._fd, self._loop._rbufs)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._abort(exc)
            return
        if n == 0:
            self._finalize(None)

    def _linger_expired(self) -> None:
        self._linger_timer = None
        if self._state == LINGERING:
            logger.debug("closing %r: no FIN from the peer within the linger timeout", self)
            self._finalize(None)

    def _abort(self, exc: BaseException | None = None) -> None:
        if self._state == CLOSED:
            return
        if exc is not None and not isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            logger.debug("closing %r after I/O error: %s", self, exc)
        self._finalize(exc)

    def _finalize(self, exc: BaseException | None) -> None:
        loop = self._loop
        self._state = CLOSED
        self._fast = self._direct = self._yielded = False
        self._in = None
        self._out = None
        timer = self._linger_timer
        if timer is not None:
            self._linger_timer = None
            timer.cancel()
        if self._accounted:
            loop._buffered -= self._accounted
            self._accounted = 0
            loop._holders.discard(self)
        self._held = 0
        fd = self._fd
        if self._mask != _UNREGISTERED:
            loop._poller.unregister(fd)
        loop._conns.pop(fd, None)
        loop._closed_count += 1
        try:
            os.close(fd)
        except OSError:
            pass
        try:
            self._protocol.connection_lost(self)
        except Exception:
            logger.exception("protocol %r failed in connection_lost for %r", self._protocol, self)
        loop._connection_closed(self)


def _owned(data: Any) -> Any:
    # A write that waits must not see later changes the caller makes to a mutable buffer.
    return data if type(data) is bytes else bytes(data)


def _frozen(data: Any) -> Any:
    # The same for a queued send, whose object may be anything pack() accepts.
    return bytes(data) if isinstance(data, (bytearray, memoryview)) else data
