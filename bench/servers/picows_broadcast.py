"""picows fan-out server for bench/fanout.c (on uvloop): /sub subscribes, every binary frame
from /pub is sent to every subscriber's transport in a loop."""

import uvloop
from _common import parse_args, raise_nofile
from picows import WSListener, WSMsgType, ws_create_server

subscribers = set()


class Subscriber(WSListener):
    def on_ws_connected(self, transport):
        subscribers.add(transport)

    def on_ws_disconnected(self, transport):
        subscribers.discard(transport)


class Publisher(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type is WSMsgType.BINARY:
            payload = frame.get_payload_as_bytes()
            for sub in subscribers:
                sub.send(WSMsgType.BINARY, payload)
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


def listener(request):
    path = request.path
    if isinstance(path, bytes):
        path = path.decode()
    return Subscriber() if path == "/sub" else Publisher()


async def main(args):
    server = await ws_create_server(
        listener, args.host, args.port, backlog=args.backlog, websocket_handshake_timeout=60
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_nofile()
    uvloop.run(main(args))
