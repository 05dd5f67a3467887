"""A line-protocol server answering each request from Redis, with an ``async def`` handler.

    python examples/async_lookup.py --port 1833 --redis redis://127.0.0.1:6379/0
    gev serve async_lookup:Lookup --app-dir examples --protocol line --workers 2

One command per line: ``GET key`` answers the value or ``(nil)``, ``SET key value`` answers
``OK``, ``INCR key`` the new count; anything else ``ERR ...``. ``on_message`` awaits
``redis.asyncio`` on gev's asyncio companion (uvloop when installed), so a slow Redis stalls no
connection of the reactor. gev sends the replies of a connection in the order of its requests
whatever finishes first; the coroutines of one connection run concurrently, so each connection
takes a lock around its commands to also *run* them in order (a ``SET`` then a ``GET`` of the
same key). A client that goes away mid-request has its pending commands cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

import redis.asyncio as aioredis
from gev_core import Connection, Handler, LineProtocol, Server

log = logging.getLogger("gev.example.lookup")


class Lookup(Handler):
    """Answers GET / SET / INCR from Redis (``--redis`` or ``$REDIS_URL``)."""

    def __init__(self, url: str | None = None) -> None:
        # Connects lazily, on the companion's loop, at the first command.
        self.redis = aioredis.Redis.from_url(
            url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        )

    async def on_connect(self, conn: Connection) -> None:
        # Created on the companion's loop, and only ever used by this connection's coroutines.
        conn.context = asyncio.Lock()

    async def on_message(self, conn: Connection, ctx: Any, data: bytes) -> bytes:
        async with conn.context:  # this connection's commands run one at a time, in order
            return await self._run(conn, data)

    async def _run(self, conn: Connection, data: bytes) -> bytes:
        command, _, rest = data.partition(b" ")
        command = command.upper()
        try:
            if command == b"GET" and rest:
                value = await self.redis.get(rest)
                return b"(nil)" if value is None else value
            if command == b"SET" and b" " in rest:
                key, _, value = rest.partition(b" ")
                await self.redis.set(key, value)
                return b"OK"
            if command == b"INCR" and rest:
                return str(await self.redis.incr(rest)).encode()
        except aioredis.RedisError as exc:
            # A reply, not a closed connection: the client may retry.
            log.warning("redis failed for %s: %s", conn.peer_addr, exc)
            return b"ERR redis unavailable"
        return b"ERR unknown command (GET key | SET key value | INCR key)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    parser.add_argument("--redis", default=None, help="Redis URL (default: $REDIS_URL or local)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = Server(Lookup(args.redis), address=(args.host, args.port), protocol=LineProtocol())
    server.start()


if __name__ == "__main__":
    main()
