"""TCP reverse proxy, the idiomatic asyncio way: two Protocols joined by their transports.

Each accepted connection opens one upstream connection; bytes are forwarded both ways with
``transport.write``, and flow control is asyncio's own: when one side's write buffer passes its
high-water mark (``pause_writing``) the other side stops reading (``pause_reading``) until it
drains (``resume_writing`` -> ``resume_reading``). Bytes a client sends before its upstream
connection is open are kept and forwarded then. --loop uvloop runs the same code on uvloop.

python bench/servers/asyncio_proxy.py --port 9000 --upstream 127.0.0.1:9001 [--loop uvloop]
"""

from __future__ import annotations

import argparse
import asyncio

from _common import raise_nofile


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def pause_writing(self) -> None:  # the upstream does not take our writes: stop the client
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream_address = upstream
        self.upstream: Upstream | None = None
        self.early: list[bytes] | None = []  # received before the upstream was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self.open())

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, self.upstream = await loop.create_connection(
                lambda: Upstream(self), *self.upstream_address
            )
        except OSError:
            self.transport.close()
            return
        assert self.upstream.transport is not None
        if self.early:
            self.upstream.transport.write(b"".join(self.early))
        self.early = None

    def data_received(self, data: bytes) -> None:
        if self.early is not None:
            self.early.append(data)
            return
        self.upstream.transport.write(data)  # type: ignore[union-attr]

    def pause_writing(self) -> None:  # the client does not take our writes: stop the upstream
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def main(args: argparse.Namespace) -> None:
    host, _, port = args.upstream.rpartition(":")
    upstream = (host or "127.0.0.1", int(port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Client(upstream), args.host, args.port, backlog=args.backlog
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, metavar="HOST:PORT")
    ap.add_argument("--backlog", type=int, default=4096)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    raise_nofile()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))
