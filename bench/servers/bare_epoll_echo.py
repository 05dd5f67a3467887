"""Bare pure-Python echo: select.epoll, level-triggered, recv(65536) + send.

A reference ceiling for what pure Python can do per readiness event.
Leftovers of a short send are buffered and drained on EPOLLOUT.
"""

import select
import socket

from _common import parse_args, raise_nofile

args = parse_args(__doc__)
raise_nofile()
ls = socket.create_server((args.host, args.port), backlog=args.backlog)
ls.setblocking(False)
ep = select.epoll()
ep.register(ls.fileno(), select.EPOLLIN)
conns, pending = {}, {}
IN, OUT = select.EPOLLIN, select.EPOLLOUT
while True:
    for fd, _ev in ep.poll():
        if fd == ls.fileno():
            while True:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    break
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns[c.fileno()] = c
                ep.register(c.fileno(), IN)
            continue
        s = conns[fd]
        try:
            old = pending.pop(fd, None)  # leftover of a short send, if any
            data = old if old is not None else s.recv(65536)
            if not data:
                raise ConnectionResetError
            try:
                n = s.send(data)
            except BlockingIOError:
                n = 0
            if n < len(data):
                pending[fd] = data[n:]
                if old is None:  # stop reading until the leftover drains
                    ep.modify(fd, OUT)
            elif old is not None:
                ep.modify(fd, IN)
        except BlockingIOError:
            pass
        except OSError:
            ep.unregister(fd)
            del conns[fd]
            pending.pop(fd, None)
            s.close()
