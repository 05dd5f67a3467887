"""websockets (asyncio implementation) fan-out server for bench/fanout.c: /sub subscribes,
every message from /pub goes to every subscriber with websockets.broadcast()."""

import asyncio

from _common import parse_args, raise_nofile
from websockets.asyncio.server import broadcast, serve

subscribers = set()


async def handler(ws):
    if ws.request.path == "/sub":
        subscribers.add(ws)
        try:
            await ws.wait_closed()
        finally:
            subscribers.discard(ws)
    else:
        async for message in ws:
            broadcast(subscribers, message)


async def main(args):
    async with serve(
        handler,
        args.host,
        args.port,
        backlog=args.backlog,
        max_size=None,
        compression=None,
        ping_interval=None,
        open_timeout=120,  # thousands of handshakes at once (and under callgrind)
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_nofile()
    asyncio.run(main(args))
