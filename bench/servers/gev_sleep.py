"""The 1 ms-sleep service on gev (bench/run.py, scenario ``sleep1000``; format in
sleep_common.py): ``LengthFieldProtocol`` framing, and the work either offloaded to the
server's thread pool (``--work thread``: ``conn.offload``) or awaited in an ``async def
on_message`` on gev's asyncio companion (``--work async``). Replies leave in request order.
"""

import asyncio
import time

from _common import parse_args, raise_nofile
from gev_core import Handler, LengthFieldProtocol, Server
from sleep_common import HEADER, add_options


def build(args):
    delay = args.sleep_ms / 1000.0

    if args.work == "thread":

        def work(frame):
            time.sleep(delay)
            return frame

        class ThreadSleep(Handler):
            def on_message(self, conn, ctx, data):
                conn.offload(work, data)  # its return value is the reply

        return ThreadSleep()

    sleep = asyncio.sleep

    class AsyncSleep(Handler):
        async def on_message(self, conn, ctx, data):
            await sleep(delay)
            return data

    return AsyncSleep()


if __name__ == "__main__":
    args = parse_args(__doc__, add_options)
    raise_nofile()
    address = f"unix:{args.unix}" if args.unix else f"{args.host}:{args.port}"
    Server(
        build(args),
        address=address,
        backlog=args.backlog,
        protocol=LengthFieldProtocol(HEADER),
        offload_threads=args.threads,
        asyncio_loop=args.loop,
    ).start()
