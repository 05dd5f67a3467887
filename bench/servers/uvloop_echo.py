"""uvloop Protocol echo server: data_received -> transport.write.

The very same protocol and server code as asyncio_echo.py, on uvloop's event loop.
"""

import uvloop
from _common import parse_args, raise_nofile
from asyncio_echo import main

if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_nofile()
    uvloop.run(main(args))
