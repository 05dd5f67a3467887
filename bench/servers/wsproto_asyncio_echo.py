"""wsproto (sans-I/O) WebSocket echo on a uvloop Protocol."""

import asyncio

import uvloop
from _common import parse_args, raise_nofile
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.ws = WSConnection(ConnectionType.SERVER)

    def data_received(self, data):
        ws = self.ws
        ws.receive_data(data)
        out = []
        for event in ws.events():
            if isinstance(event, (BytesMessage, TextMessage)):
                # Partial messages are echoed as fragments of one message.
                out.append(
                    ws.send(type(event)(data=event.data, message_finished=event.message_finished))
                )
            elif isinstance(event, Request):
                out.append(ws.send(AcceptConnection()))
            elif isinstance(event, Ping):
                out.append(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                out.append(ws.send(event.response()))
                self.transport.write(b"".join(out))
                self.transport.close()
                return
        if out:
            self.transport.write(b"".join(out))


async def main(args):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, args.host, args.port, backlog=args.backlog)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    raise_nofile()
    uvloop.run(main(args))
