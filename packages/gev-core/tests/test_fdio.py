"""The socket calls of the per-message paths: the ``_fdio`` C kernel behaves like ``os``.

The kernel exists only in compiled builds (absent from a pure install and under
``GEV_PURE_PYTHON=1``), so these tests run there against it and, as a reference for what the
loop expects, against ``os.read`` / ``os.write`` / ``os.writev`` everywhere.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading

import pytest
from gev_core import _connection

IMPLS = [pytest.param((os.read, os.write, os.writev), id="os")]
try:
    from gev_core import _fdio
except ImportError:
    _fdio = None  # type: ignore[assignment]
else:
    IMPLS.append(pytest.param((_fdio.read, _fdio.write, _fdio.writev), id="fdio"))


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_the_connection_uses_the_kernel_when_it_is_installed():
    assert _connection.NATIVE_IO is (_fdio is not None)
    if _fdio is not None:
        assert _connection._read is _fdio.read
        assert _connection._write is _fdio.write


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", [1, 64, 256, 4095, 4096, 4097, 65536])
def test_read_returns_what_is_there_up_to_size(impl, pair, size):
    read, _, _ = impl
    a, b = pair
    payload = bytes(range(256)) * 40  # 10,240 bytes
    b.sendall(payload)
    got = read(a.fileno(), size)
    assert type(got) is bytes
    assert got == payload[: min(size, len(payload))]


@pytest.mark.parametrize("impl", IMPLS)
def test_read_errors_are_the_os_errors(impl, pair):
    read, _, _ = impl
    a, b = pair
    with pytest.raises(BlockingIOError) as info:
        read(a.fileno(), 256)
    assert info.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    with pytest.raises(BlockingIOError):
        read(a.fileno(), 65536)  # the large-read branch too
    assert read(a.fileno(), 0) == b""
    b.close()
    assert read(a.fileno(), 256) == b""  # EOF
    assert read(a.fileno(), 65536) == b""
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as bad:
        read(r, 256)
    assert bad.value.errno == errno.EBADF
    with pytest.raises(OSError) as negative:
        read(a.fileno(), -1)
    assert negative.value.errno == errno.EINVAL


@pytest.mark.parametrize("impl", IMPLS)
def test_reset_connection_raises_connection_reset(impl):
    _, write, _ = impl
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    server.close()
    client.setblocking(False)
    peer.sendall(b"unread")
    # Closing with unread data in the receive buffer sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    peer.setblocking(False)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(100):
            write(peer.fileno(), b"x" * 4096)
    peer.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_write_accepts_bytes_like_and_reports_partial_writes(impl, pair):
    read, write, _ = impl
    a, b = pair
    assert write(a.fileno(), b"bytes") == 5
    assert write(a.fileno(), bytearray(b"array")) == 5
    assert write(a.fileno(), memoryview(b"xxview")[2:]) == 4
    assert read(b.fileno(), 100) == b"bytesarrayview"
    with pytest.raises(TypeError):
        write(a.fileno(), "text")
    # Fill the socket: a write that does not fit returns how much the kernel took, then EAGAIN.
    big = b"z" * (1 << 22)
    n = write(a.fileno(), big)
    assert 0 < n < len(big)
    with pytest.raises(BlockingIOError):
        while True:
            write(a.fileno(), big)


@pytest.mark.parametrize("impl", IMPLS)
def test_writev_gathers_buffers(impl, pair):
    read, _, writev = impl
    a, b = pair
    assert writev(a.fileno(), (b"head", memoryview(b"-body-"), bytearray(b"tail"))) == 14
    assert writev(a.fileno(), [b"x"]) == 1
    assert read(b.fileno(), 100) == b"head-body-tailx"
    with pytest.raises(TypeError):
        writev(a.fileno(), 42)
    with pytest.raises(TypeError):
        writev(a.fileno(), (b"ok", "text"))
    with pytest.raises(OSError) as info:
        writev(a.fileno(), [b"x"] * (os.sysconf("SC_IOV_MAX") + 1))
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("count", [63, 64, 65, 200, "max"])
def test_writev_of_many_buffers(impl, pair, count):
    # The kernel keeps up to 64 buffers' descriptors on the C stack and longer lists on the
    # heap: both sides of that line, mixed buffer types, and a bad item late in a long list
    # (the views taken before it are released).
    read, _, writev = impl
    a, b = pair
    n = os.sysconf("SC_IOV_MAX") if count == "max" else count
    kinds = (lambda b: b * 3, lambda b: memoryview(b * 2), bytearray)
    items = [kinds[i % 3](bytes([i % 256])) for i in range(n)]
    expected = b"".join(bytes(x) for x in items)
    assert writev(a.fileno(), items) == len(expected)
    got = b""
    while len(got) < len(expected):
        got += read(b.fileno(), 65536)
    assert got == expected
    view = memoryview(b"v")
    with pytest.raises(TypeError):
        writev(a.fileno(), [view] * (n - 1) + ["text"])
    view.release()  # raises BufferError if an export taken before the bad item was kept


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments(impl, pair):
    read, write, writev = impl
    a, _ = pair
    with pytest.raises(TypeError):
        read(a.fileno())
    with pytest.raises(TypeError):
        write(a.fileno())
    with pytest.raises(TypeError):
        read("3", 10)
    with pytest.raises((ValueError, OSError, OverflowError)):
        write(-1, b"x")
    with pytest.raises(TypeError):
        writev(a.fileno(), [b"x"], 3)


@pytest.mark.skipif(_fdio is None, reason="the _fdio kernel is not installed (pure build)")
@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_a_signal_handler_that_raises_interrupts_the_call():
    # A blocking descriptor (never what the loop passes) shows the EINTR handling: the handler
    # runs, and its exception comes out of the call instead of a retry.
    r, w = os.pipe()

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):
            _fdio.read(r, 256)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(r)
        os.close(w)


needs_epoll = pytest.mark.skipif(
    _fdio is None or not hasattr(_fdio, "epoll_wait"),
    reason="the _fdio kernel with epoll_wait (Linux, compiled build) is not installed",
)


@pytest.fixture
def epoll_pair(pair):
    import select

    ep = select.epoll()
    a, b = pair
    ep.register(a.fileno(), select.EPOLLIN)
    yield ep, a, b
    ep.close()


@needs_epoll
def test_epoll_wait_reports_what_select_epoll_reports(epoll_pair):
    import select

    ep, a, b = epoll_pair
    assert _fdio.epoll_wait(ep.fileno(), 0.0) == [] == ep.poll(0)
    b.send(b"x")
    got = _fdio.epoll_wait(ep.fileno(), -1.0)
    assert got == [(a.fileno(), select.EPOLLIN)] == ep.poll(0)
    assert type(got[0]) is tuple
    ep.register(b.fileno(), select.EPOLLOUT)
    assert sorted(_fdio.epoll_wait(ep.fileno(), 0)) == sorted(ep.poll(0))
    with pytest.raises(OSError) as info:
        _fdio.epoll_wait(a.fileno(), 0.0)  # not an epoll descriptor
    assert info.value.errno == errno.EINVAL
    with pytest.raises(TypeError):
        _fdio.epoll_wait(ep.fileno(), "soon")


@needs_epoll
def test_epoll_wait_waits_for_the_timeout_and_lets_other_threads_run(epoll_pair):
    import time

    ep, _, _ = epoll_pair
    done = threading.Event()
    spins = [0]

    def spin():
        while not done.is_set():
            spins[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = spins[0]
        start = time.monotonic()
        assert _fdio.epoll_wait(ep.fileno(), 0.2) == []
        waited = time.monotonic() - start
        seen = spins[0] - before
    finally:
        done.set()
        t.join()
    assert waited >= 0.19
    # The GIL was released while waiting: the spinning thread ran meanwhile (held for 0.2 s,
    # it could not have).
    assert seen > 1000


@needs_epoll
@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_epoll_wait_resumes_after_a_signal_and_raises_what_a_handler_raises(epoll_pair):
    import time

    ep, _, _ = epoll_pair
    calls = []

    class Interrupted(Exception):
        pass

    def quiet(signum, frame):
        calls.append(signum)

    def raising(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, quiet)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        start = time.monotonic()
        assert _fdio.epoll_wait(ep.fileno(), 0.3) == []
        assert time.monotonic() - start >= 0.29  # the time left, not a fresh timeout or none
        assert calls == [signal.SIGALRM]
        signal.signal(signal.SIGALRM, raising)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):
            _fdio.epoll_wait(ep.fileno(), -1.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="Linux only")
def test_the_epoll_poller_uses_the_kernel_when_it_is_installed():
    from gev_core import _poll_epoll

    poller = _poll_epoll.EpollPoller()
    try:
        if _fdio is not None and hasattr(_fdio, "epoll_wait"):
            assert poller.poll.func is _fdio.epoll_wait
        else:
            assert poller.poll == poller._ep.poll
    finally:
        poller.close()
