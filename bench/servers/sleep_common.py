"""What the 1 ms-sleep servers share: their options and the frame format.

The service: every frame a client sends -- loadgen's ``pbframe`` frames, a big-endian u32
length and that many bytes -- is answered with itself once a piece of work that takes
``--sleep-ms`` is done: ``time.sleep`` in a thread pool of ``--threads`` threads
(``--work thread``: the stand-in for a blocking database or HTTP client), or ``await
asyncio.sleep`` (``--work async``: the stand-in for an asyncio client). Requests of one
connection may be worked on at once; their answers leave in request order.
"""

import argparse

HEADER = 4  # u32 big-endian length of what follows


def add_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--work", choices=["thread", "async"], default="async")
    ap.add_argument("--sleep-ms", type=float, default=1.0, help="duration of each request's work")
    ap.add_argument("--threads", type=int, default=32, help="thread pool size for --work thread")
    ap.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the asyncio event loop (the server's own, or gev's companion for --work async)",
    )
