"""websockets (asyncio implementation) echo server."""

import asyncio

from _common import parse_args, raise_nofile
from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main(args):
    async with serve(
        echo,
        args.host,
        args.port,
        backlog=args.backlog,
        max_size=None,
        compression=None,
        ping_interval=None,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_nofile()
    asyncio.run(main(args))
