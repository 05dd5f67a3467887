"""asyncio Protocol echo server: data_received -> transport.write (over TLS with --certfile)."""

import asyncio

from _common import parse_args, raise_nofile, tls_context


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def main(args):
    loop = asyncio.get_running_loop()
    ssl = tls_context(args)
    if args.unix:
        server = await loop.create_unix_server(Echo, args.unix, backlog=args.backlog, ssl=ssl)
    else:
        server = await loop.create_server(Echo, args.host, args.port, backlog=args.backlog, ssl=ssl)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_nofile()
    asyncio.run(main(args))
