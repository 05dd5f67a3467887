"""Addresses and listening sockets: the one place in gev that binds.

Every listening socket -- a :class:`~gev_core.Server`'s own, the worker supervisor's, the ones a
worker inherits -- is made by :func:`bind_socket`, so TCP options, IPv6-only, Unix socket files
and their permissions are handled the same way everywhere.

Address forms: ``"host:port"``, ``":port"`` (all IPv4 interfaces), ``"[v6]:port"``, a
``(host, port)`` tuple, ``"unix:/path/to.sock"`` and, on Linux, ``"unix:@name"`` (the abstract
namespace: no file, gone with the last socket that holds it).

Unix socket files. A path that exists when a server binds is one of three things:

* a socket a live server listens on: binding fails with ``EADDRINUSE`` and says so (replacing
  it would silently steal a running server's address);
* a socket nobody listens on -- the file a server left behind when it died without cleaning
  up: a connect attempt is refused, so it is removed and bound again;
* anything else (a regular file, a directory): binding fails and the file is left alone.

Permissions (``unix_mode``) are set between ``bind`` and ``listen``. Until ``listen`` a connect
is refused, so there is no window in which the socket accepts connections under the process's
umask. The owner of a socket file removes it when it stops (:class:`SocketFile`), but only while
the path still names the same file (device, inode and change time): after a restart another
server may already have bound it again.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Any

__all__ = [
    "UNIX_PREFIX",
    "SocketFile",
    "bind_socket",
    "format_address",
    "is_unix_address",
    "parse_address",
]

UNIX_PREFIX = "unix:"
_NETWORKS = ("tcp", "tcp4", "tcp6", "unix")


def is_unix_address(address: object) -> bool:
    """True for ``"unix:..."`` addresses."""
    return isinstance(address, str) and address.startswith(UNIX_PREFIX)


def _unix_sockaddr(address: str) -> str:
    name = address[len(UNIX_PREFIX) :] if is_unix_address(address) else address
    if not name:
        raise ValueError(f"address {address!r} names no socket: use 'unix:/path' or 'unix:@name'")
    if name.startswith("@"):
        if not name[1:]:
            raise ValueError(f"address {address!r}: the abstract socket needs a name after '@'")
        return "\0" + name[1:]
    return name


def parse_address(address: str | tuple[str, int], network: str = "tcp") -> tuple[int, Any]:
    """Resolve an address for ``network``; returns ``(family, sockaddr)``.

    ``network`` is ``"tcp"`` (whichever family the host resolves to; all IPv4 interfaces for an
    empty host), ``"tcp4"``, ``"tcp6"`` or ``"unix"``. A ``"unix:"`` address is a Unix socket
    whatever ``network`` says; its sockaddr is the path, or ``"\\0name"`` for ``"unix:@name"``.
    """
    if network not in _NETWORKS:
        names = ", ".join(map(repr, _NETWORKS))
        raise ValueError(f"network must be one of {names}, not {network!r}")
    if is_unix_address(address) or network == "unix":
        if not hasattr(socket, "AF_UNIX"):
            raise ValueError("Unix domain sockets are not supported on this platform")
        if not isinstance(address, str):
            raise ValueError(f"a Unix socket address is a string, not {address!r}")
        path = _unix_sockaddr(address)
        if path.startswith("\0") and not sys.platform.startswith("linux"):
            raise ValueError(f"{address!r}: the abstract socket namespace exists on Linux only")
        return socket.AF_UNIX, path
    if isinstance(address, tuple):
        host, port = address[0], int(address[1])
    else:
        host, sep, port_s = address.rpartition(":")
        if not sep or not port_s.isdigit():
            raise ValueError(
                f"address {address!r} must look like 'host:port', ':port' or 'unix:/path'"
            )
        port = int(port_s)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    family = {"tcp": socket.AF_UNSPEC, "tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}[network]
    if not host:
        host = "::" if network == "tcp6" else "0.0.0.0"
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr


def format_address(sockaddr: Any) -> str:
    """A socket address as ``--address`` takes it: ``"host:port"``, ``"[v6]:port"``,
    ``"unix:/path"`` or ``"unix:@name"``.

    Takes what ``getsockname()`` / ``accept()`` return, or the address forms above (returned as
    they are). An unnamed Unix peer (the usual client) is ``"unix:"``.
    """
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        host, port = str(sockaddr[0]), int(sockaddr[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(sockaddr, (bytes, bytearray)):
        sockaddr = bytes(sockaddr).decode("utf-8", "surrogateescape")
    name = str(sockaddr)
    if name.startswith(UNIX_PREFIX):
        return name
    if name.startswith("\0"):
        return f"{UNIX_PREFIX}@{name[1:]}"
    return UNIX_PREFIX + name


@dataclass(frozen=True)
class SocketFile:
    """The file of a Unix socket bound to a path, to remove when its owner stops."""

    path: str
    device: int
    inode: int
    #: An inode number is reused as soon as it is free: a file bound again in the same place
    #: often gets the very same one. Its change time tells them apart.
    ctime_ns: int

    @classmethod
    def of(cls, sock: socket.socket) -> SocketFile | None:
        """The socket file behind ``sock``; ``None`` for TCP and abstract Unix sockets."""
        if sock.family != getattr(socket, "AF_UNIX", None):
            return None
        path = sock.getsockname()
        if not isinstance(path, str) or not path or path.startswith("\0"):
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(path, st.st_dev, st.st_ino, st.st_ctime_ns)

    def remove(self) -> bool:
        """Unlink the path if it still names this socket; True if it did."""
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino, st.st_ctime_ns) != (self.device, self.inode, self.ctime_ns):
                # Bound again by someone else meanwhile: theirs now. (Or changed by chmod: then
                # the file stays behind, and the next server replaces it as stale.)
                return False
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True


def _clear_stale_socket_file(path: str) -> None:
    """Remove ``path`` if it is a Unix socket file nobody listens on (see the module docstring)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: no server behind it
    except OSError as exc:
        # EAGAIN (a full backlog), a timeout, EACCES: someone is there, or we cannot tell.
        raise OSError(
            errno.EADDRINUSE, f"unix:{path} is in use (a connect attempt gave: {exc})"
        ) from None
    else:
        raise OSError(errno.EADDRINUSE, f"another server is listening on unix:{path}")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def bind_socket(
    address: str | tuple[str, int],
    *,
    network: str = "tcp",
    reuse_port: bool = False,
    backlog: int | None = None,
    unix_mode: int | None = None,
) -> socket.socket:
    """A stream socket bound to ``address``, listening if ``backlog`` is given, non-blocking.

    :param reuse_port: set ``SO_REUSEPORT`` (TCP only: Unix sockets cannot share a path).
    :param unix_mode: permissions of a Unix socket file (e.g. ``0o660``), set before it listens.
    :raises OSError: the address is in use (for a Unix path, by a live server) or cannot be
        bound.
    :raises ValueError: a malformed address, or an option that does not apply to it.
    """
    family, sockaddr = parse_address(address, network)
    unix = family == getattr(socket, "AF_UNIX", None)
    if unix and reuse_port:
        raise ValueError("SO_REUSEPORT does not apply to Unix sockets: they cannot share a path")
    if unix_mode is not None and (not unix or sockaddr.startswith("\0")):
        raise ValueError("unix_mode applies to Unix sockets bound to a path only")
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("SO_REUSEPORT is not supported on this platform")
    if unix and not sockaddr.startswith("\0"):
        _clear_stale_socket_file(sockaddr)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if not unix:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and network == "tcp6":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        if unix_mode is not None:
            os.chmod(sockaddr, unix_mode)
        if backlog is not None:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        bound = SocketFile.of(sock) if unix else None
        sock.close()
        if bound is not None:
            bound.remove()
        raise
    return sock
