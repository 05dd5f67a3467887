"""picows WebSocket echo server (binary and text frames echoed as received)."""

import uvloop
from _common import parse_args, raise_nofile
from picows import WSListener, WSMsgType, ws_create_server


class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        t = frame.msg_type
        if t is WSMsgType.BINARY or t is WSMsgType.TEXT or t is WSMsgType.CONTINUATION:
            transport.send(t, frame.get_payload_as_memoryview(), frame.fin)
        elif t is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def main(args):
    server = await ws_create_server(
        lambda request: Echo(),
        args.host,
        args.port,
        backlog=args.backlog,
        max_frame_size=64 * 1024 * 1024,
        websocket_handshake_timeout=30,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_nofile()
    uvloop.run(main(args))
