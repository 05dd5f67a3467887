"""The seed's protobuf example client: each line typed is sent as a Msg1 or a Msg2.

python examples/protobuf/client.py --port 1833

Like gev's client it picks the message type at random and frames it with pack_message
(byte-for-byte what Go gev's PackMessage builds), so it also talks to a Go gev server. It does
not wait for answers. End with Ctrl-D.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys

from _proto import load
from gev_protobuf import pack_message

pb = load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1833)
    args = parser.parse_args()

    with socket.create_connection((args.host, args.port)) as sock:
        while True:
            print("Text to send: ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            name = line.rstrip("\n")
            if random.randrange(2) == 0:
                frame = pack_message("msg1", pb.Msg1(name=name, id=1).SerializeToString())
            else:
                msg = pb.Msg2(name=name, alias="big " + name, id=2)
                frame = pack_message("msg2", msg.SerializeToString())
            sock.sendall(frame)
    print()


if __name__ == "__main__":
    main()
