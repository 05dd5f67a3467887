"""Instructions per message of gev's sans-IO TLS engine alone (callgrind), no sockets.

    python bench/callgrind_tls_engine.py [--size 64] [--python ENV/bin/python --no-src-path]

A server engine and a client engine handshake in memory (TLS 1.3, a trustme ECDSA
certificate), then the client encrypts N messages; with the server's work on, the server also
``feed``s each record and ``encrypt``s the plaintext back -- what a TLS echo server does per
message on top of a plaintext echo. Each variant runs under callgrind for two values of N; the
server's instructions per message are the difference of the two differences divided by the
difference of N, which cancels start-up and the client's share. Needs valgrind and trustme.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = """
import sys
from gev_core._tls import TLSEngine
from gev_core.testing import tls_certificates

n, server_work, size = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
certs = tls_certificates()
server = TLSEngine(certs.server_context(), server_side=True)
client = TLSEngine(certs.client_context(), server_side=False, server_hostname="localhost")
out = client.start()
while out:
    server.feed(out)
    client.feed(server.take_output())
    out = client.take_output()
message = b"x" * size
for _ in range(n):
    record = client.encrypt(message)
    if server_work:
        server.encrypt(server.feed(record))
"""


def instructions(python: str, env: dict[str, str], n: int, server: bool, size: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "workload.py"
        script.write_text(WORKLOAD)
        out = Path(tmp) / "cg.out"
        subprocess.run(
            [
                *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
                *(python, str(script), str(n), "1" if server else "0", str(size)),
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(errors="replace"), re.M)
        if not m:
            raise SystemExit("no callgrind totals")
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--size", type=int, default=64, help="message bytes")
    ap.add_argument("--short", type=int, default=2000, help="messages of the short run")
    ap.add_argument("--long", type=int, default=12000, help="messages of the long run")
    ap.add_argument(
        "--no-src-path",
        action="store_true",
        help="run the gev code installed in --python's environment, not packages/*/src",
    )
    args = ap.parse_args()
    env = dict(os.environ)
    if not args.no_src_path:
        srcs = [str(p) for p in sorted((ROOT / "packages").glob("*/src"))]
        env["PYTHONPATH"] = os.pathsep.join([*srcs, env.get("PYTHONPATH", "")])
    counts = {
        (n, server): instructions(args.python, env, n, server, args.size)
        for n in (args.short, args.long)
        for server in (False, True)
    }
    client = counts[args.long, False] - counts[args.short, False]
    both = counts[args.long, True] - counts[args.short, True]
    per = (both - client) / (args.long - args.short)
    print(f"server feed + encrypt: {per:,.0f} instructions per {args.size} B message")


if __name__ == "__main__":
    main()
