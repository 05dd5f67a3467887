"""Netstrings (``5:hello,``) as a gev protocol: a complete third-party plugin."""

from gev_core import NEED_MORE_DATA, Protocol, ProtocolError, hookimpl


class Netstring(Protocol):
    name = "netstring"

    def unpack(self, conn, buffer):
        head = bytes(buffer.linear_view()[:8])
        length, colon, _ = head.partition(b":")
        malformed = not length.isdigit() if colon else len(head) == 8 or not head.isdigit()
        if head and malformed:
            raise ProtocolError(f"bad netstring length prefix {head!r}")
        if not colon or len(buffer) <= len(length) + 1 + int(length):
            return None
        frame = buffer.read(len(length) + 2 + int(length))
        if frame[-1:] != b",":
            raise ProtocolError("netstring not terminated by ','")
        return None, frame[len(length) + 1 : -1]

    def pack(self, conn, data):
        return b"%d:%s," % (len(data), bytes(data))


@hookimpl
def gev_register_protocols():
    return [Netstring]


@hookimpl
def gev_select_protocol(connection, data, candidates):
    if "netstring" in candidates and data[:1].isdigit():
        return "netstring" if b":" in data else NEED_MORE_DATA
    return None
