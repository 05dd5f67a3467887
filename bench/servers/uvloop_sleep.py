"""The 1 ms-sleep service on asyncio + uvloop: the reference for gev's offloaded and
``async def`` handlers (bench/run.py, scenario ``sleep1000``; format in sleep_common.py).

``--style protocol`` (default): an ``asyncio.Protocol``; each frame becomes a task
(``--work async``) or an executor future (``--work thread``, ``run_in_executor`` on a
``ThreadPoolExecutor`` of ``--threads``); a per-connection queue of futures writes the answers
in request order as the head ones finish -- the fast way to write it with asyncio.
``--style streams``: ``asyncio.start_server`` with ``readexactly``, one request at a time per
connection -- the way most asyncio code is written.
"""

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from _common import parse_args, raise_nofile
from sleep_common import HEADER, add_options


def make_work(args, loop):
    delay = args.sleep_ms / 1000.0
    if args.work == "async":
        sleep = asyncio.sleep

        async def work(frame):
            await sleep(delay)
            return frame

        return lambda frame: loop.create_task(work(frame))

    pool = ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="sleep")

    def blocking(frame):
        time.sleep(delay)
        return frame

    return lambda frame: loop.run_in_executor(pool, blocking, frame)


class SleepEcho(asyncio.Protocol):
    def __init__(self, work):
        self.work = work
        self.buf = bytearray()
        self.pending = deque()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buf = self.buf
        buf += data
        end = len(buf)
        pos = 0
        while end - pos >= HEADER:
            stop = pos + HEADER + int.from_bytes(buf[pos : pos + HEADER], "big")
            if stop > end:
                break
            fut = self.work(bytes(buf[pos:stop]))
            self.pending.append(fut)
            fut.add_done_callback(self.flush)
            pos = stop
        del buf[:pos]

    def flush(self, _fut):
        pending = self.pending
        while pending and pending[0].done():
            fut = pending.popleft()
            if not fut.cancelled() and not self.transport.is_closing():
                self.transport.write(fut.result())

    def connection_lost(self, exc):
        for fut in self.pending:
            fut.cancel()


async def serve_protocol(args):
    loop = asyncio.get_running_loop()
    work = make_work(args, loop)
    factory = lambda: SleepEcho(work)  # noqa: E731
    if args.unix:
        server = await loop.create_unix_server(factory, args.unix, backlog=args.backlog)
    else:
        server = await loop.create_server(factory, args.host, args.port, backlog=args.backlog)
    async with server:
        await server.serve_forever()


async def serve_streams(args):
    loop = asyncio.get_running_loop()
    work = make_work(args, loop)

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readexactly(HEADER)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                writer.write(await work(head + body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    if args.unix:
        server = await asyncio.start_unix_server(handle, args.unix, backlog=args.backlog)
    else:
        server = await asyncio.start_server(handle, args.host, args.port, backlog=args.backlog)
    async with server:
        await server.serve_forever()


def options(ap):
    add_options(ap)
    ap.add_argument("--style", choices=["protocol", "streams"], default="protocol")


if __name__ == "__main__":
    args = parse_args(__doc__, options)
    raise_nofile()
    main = serve_protocol(args) if args.style == "protocol" else serve_streams(args)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
