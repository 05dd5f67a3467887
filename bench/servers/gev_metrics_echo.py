"""gev echo with gev-metrics registered explicitly, on or off: the cost of metrics, side by side.

    python bench/servers/gev_metrics_echo.py --port P --metrics on    # --metrics-address set
    python bench/servers/gev_metrics_echo.py --port P --metrics off   # plugin loaded, not enabled
    python bench/servers/gev_metrics_echo.py --port P --metrics none  # no plugin at all
    python bench/servers/gev_metrics_echo.py --port P --metrics count # no plugin, the loops count

The plugin is registered by hand (entry-point autoload off), so the comparison holds whether or
not the packages are installed (run.py puts packages/*/src on PYTHONPATH). With ``on`` the
admin endpoint listens on an ephemeral port and the sampler runs every second, as in
production (``--interval`` changes that: a long one leaves only the per-message costs for
callgrind to count); the script refuses to serve if the endpoint did not come up. ``count``
is ``none`` with ``Server(count_traffic=True)``: what gev-core's byte and message counters
cost alone, apart from the plugin's threads.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import raise_nofile
from gev_core import Handler, Server, get_plugin_manager


class Echo(Handler):
    def on_message(self, conn, ctx, data):  # type: ignore[no-untyped-def]
        return data


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--metrics", choices=("on", "off", "none", "count"), default="on")
    ap.add_argument(
        "--interval", type=float, default=1.0, help="sampling interval with --metrics on"
    )
    args = ap.parse_args()
    raise_nofile()
    pm = get_plugin_manager(autoload=False)
    options = {}
    if args.metrics in ("on", "off"):
        import gev_metrics.plugin

        pm.register(gev_metrics.plugin, name="metrics")
    if args.metrics == "on":
        options = {"metrics_address": "127.0.0.1:0", "metrics_interval": args.interval}
    server = Server(
        Echo(),
        address=(args.host, args.port),
        backlog=4096,
        plugins=pm,
        options=options,
        count_traffic=args.metrics == "count",
    )
    if args.metrics == "on":
        from gev_metrics import _runtime

        if id(server) not in _runtime._servers or not server.count_traffic:
            sys.exit("metrics were asked for but are not set up (or the loops do not count)")
    server.start()


if __name__ == "__main__":
    main()
