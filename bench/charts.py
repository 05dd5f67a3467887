#!/usr/bin/env python3
"""Render ``bench/run.py --json-out`` results as SVG charts (matplotlib).

    python bench/charts.py tcp.json ws.json memory.json --out docs/assets/bench

Writes, for whatever the files contain:

* ``tcp-throughput.svg`` -- msgs/s per server in each TCP scenario (raw and protobuf echo);
* ``ws-throughput.svg`` -- the same for the WebSocket scenarios;
* ``scaling.svg`` -- msgs/s against the number of connections (64-byte messages, 1 in flight);
* ``memory.svg`` -- server memory per idle connection;

bars are medians over the rounds with min-max whiskers. Every chart carries, in a caption and in
the SVG's metadata, the machine, the Python and the exact command of each run it shows, and the
input files are copied next to the charts, so any chart can be traced back and redrawn.
``--check`` only validates the input files. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# Fixed colours per server, so a server looks the same on every chart; gev's in blue.
COLORS = {
    "gev": "#1f5fbf",
    "gev-pb": "#4f8fe6",
    "gev-ws": "#1f5fbf",
    "uvloop": "#e07b00",
    "asyncio": "#8c8c8c",
    "bare-python": "#b5b5b5",
    "c": "#2f2f2f",
    "picows": "#d62728",
    "websockets": "#9467bd",
    "wsproto": "#bcbd22",
}
_FALLBACK = ["#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#2ca02c"]


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs of every file, each tagged with the file's environment and command."""
    runs = []
    for path in paths:
        doc = json.loads(path.read_text())
        for key in ("env", "results"):
            if key not in doc:
                raise SystemExit(f"{path}: not a bench/run.py --json-out file (no {key!r})")
        source = {
            "file": path.name,
            "env": doc["env"],
            "command": doc.get("command") or _command_from_argv(doc.get("argv", [])),
            "date": doc.get("date", ""),
            "sched": doc.get("sched", ""),
            "scenarios": doc.get("scenarios") or {},
        }
        for result in doc["results"]:
            runs.append({**result, "source": source})
    return runs


def _command_from_argv(argv: list[str]) -> str:
    return "python bench/run.py " + " ".join(argv[1:])


def _clean(command: str) -> str:
    # Absolute paths outside the repository (an interpreter, a temp file) say nothing useful
    # in a caption: keep their last component.
    out = []
    for word in command.split(" "):
        if word.startswith("/") and not word.startswith(str(ROOT)):
            word = Path(word).name
        out.append(word.replace(str(ROOT) + "/", ""))
    return " ".join(out)


def scenario_info(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = {}
    for run in runs:
        info.update(run["source"]["scenarios"])
    missing = {r["scenario"] for r in runs} - set(info)
    if missing:  # files written before run.py recorded its scenarios
        sys.path.insert(0, str(BENCH))
        from run import SCENARIOS  # type: ignore[import-not-found]

        for name in missing:
            if name in SCENARIOS:
                info[name] = SCENARIOS[name].__dict__
    return info


def medians(runs: list[dict[str, Any]], metric: str) -> dict[tuple[str, str], tuple[float, ...]]:
    """(scenario, server) -> (median, min, max) of ``metric`` over the successful rounds."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        if run.get("ok"):
            values[(run["scenario"], run["server"])].append(float(run[metric]))
    return {k: (statistics.median(v), min(v), max(v)) for k, v in values.items()}


def _order(names: set[str] | list[str]) -> list[str]:
    # gev's servers first, then as the registry of run.py lists them.
    known = list(COLORS)
    return sorted(
        names, key=lambda n: (not n.startswith("gev"), known.index(n) if n in known else 99, n)
    )


def _color(server: str, i: int) -> str:
    return COLORS.get(server) or _FALLBACK[i % len(_FALLBACK)]


NOTE: list[str] = []  # --note: a line for every caption (e.g. "preliminary run")


CAPTION_PT = 7.0


def caption(runs: list[dict[str, Any]], width_in: float = 12.0) -> str:
    """Machine, Python and command of every run file, wrapped to a figure ``width_in`` wide."""
    chars = int(width_in * 72 / (CAPTION_PT * 0.61)) - 2
    lines = list(NOTE)
    seen = set()
    for run in runs:
        src = run["source"]
        if src["file"] in seen:
            continue
        seen.add(src["file"])
        env = src["env"]
        machine = (
            f"{env.get('cpu', '?')}, {env.get('cpus', '?')} CPUs, kernel {env.get('kernel', '?')};"
            f" {env.get('impl', 'python')} {env.get('python', '?')}"
        )
        compiled = env.get("gev_compiled") or {}
        if compiled:
            built = sorted(k for k, v in compiled.items() if v)
            machine += "; gev " + (
                f"compiled ({', '.join(built)})" if built else "pure Python (no compiled module)"
            )
        when = f" ({src['date'][:10]})" if src["date"] else ""
        lines.append(f"{machine}{when}")
        lines.append(f"$ {_clean(src['command'])}")
    return "\n".join(
        wrapped
        for line in lines
        for wrapped in textwrap.wrap(line, chars, subsequent_indent="    ")
    )


def _caption_height(text: str) -> float:
    """Inches the caption takes at the bottom of a figure."""
    return (text.count("\n") + 1) * CAPTION_PT * 1.3 / 72 + 0.2


def _figure(plt: Any, rows: int, cols: int, width: float, plot_height: float, text: str) -> Any:
    height = plot_height + _caption_height(text)
    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False)


def _layout(fig: Any, text: str, top: float = 0.95) -> None:
    bottom = _caption_height(text) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, top))


def _save(fig: Any, path: Path, title: str, runs: list[dict[str, Any]]) -> None:
    text = caption(runs, fig.get_figwidth())
    fig.text(0.01, 0.01, text, fontsize=CAPTION_PT, family="monospace", va="bottom", ha="left")
    fig.savefig(
        path,
        format="svg",
        metadata={
            "Title": title,
            "Description": text,
            "Creator": "bench/charts.py",
            "Date": None,  # reproducible output
        },
    )
    print(f"wrote {path}")


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.hashsalt": "gev-bench",  # stable ids: identical inputs give identical files
            "svg.fonttype": "none",  # text stays text: searchable, small
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def throughput_chart(
    plt: Any, runs: list[dict[str, Any]], scenarios: list[str], title: str, path: Path
) -> bool:
    stats = medians(runs, "msgs_per_sec")
    scenarios = [s for s in scenarios if any(k[0] == s for k in stats)]
    if not scenarios:
        return False
    info = scenario_info(runs)
    n = len(scenarios)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    used = [r for r in runs if r["scenario"] in scenarios]
    width = 4.0 * cols
    text = caption(used, width)
    fig, axes = _figure(plt, rows, cols, width, 2.9 * rows + 0.4, text)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        servers = _order({k[1] for k in stats if k[0] == scenario})
        meds = [stats[(scenario, s)][0] for s in servers]
        lows = [m - stats[(scenario, s)][1] for m, s in zip(meds, servers, strict=True)]
        highs = [stats[(scenario, s)][2] - m for m, s in zip(meds, servers, strict=True)]
        colors = [_color(s, i) for i, s in enumerate(servers)]
        ax.bar(servers, meds, color=colors, yerr=[lows, highs], capsize=3, ecolor="#555")
        for x, m in enumerate(meds):
            ax.text(x, m, f"{m / 1000:,.0f}k", ha="center", va="bottom", fontsize=7.5)
        sc = info.get(scenario, {})
        detail = (
            f"{sc.get('conns')} conns, {sc.get('size')} B, {sc.get('inflight')} in flight"
            if sc
            else ""
        )
        ax.set_title(f"{scenario}\n{detail}", fontsize=9)
        ax.set_ylabel("messages/s (median, min-max)")
        ax.tick_params(axis="x", labelrotation=30)
        ax.yaxis.set_major_formatter(lambda v, _: f"{v / 1000:,.0f}k")
    fig.suptitle(title, fontsize=11)
    _layout(fig, text, top=1 - 0.35 / fig.get_figheight())
    _save(fig, path, title, used)
    plt.close(fig)
    return True


def scaling_chart(plt: Any, runs: list[dict[str, Any]], path: Path) -> bool:
    info = scenario_info(runs)
    stats = medians(runs, "msgs_per_sec")
    families = {"raw": "TCP echo, 64 B", "ws": "WebSocket echo, 64 B"}
    panels = []
    for mode, label in families.items():
        names = [
            n
            for n, sc in info.items()
            if sc.get("mode") == mode and sc.get("size") == 64 and sc.get("inflight") == 1
        ]
        conns = {n: info[n]["conns"] for n in names if any(k[0] == n for k in stats)}
        if len(set(conns.values())) >= 2:
            panels.append((label, conns))
    if not panels:
        return False
    used = [r for r in runs if any(r["scenario"] in c for _, c in panels)]
    width = 5.2 * len(panels)
    text = caption(used, width)
    fig, axes = _figure(plt, 1, len(panels), width, 3.4, text)
    for ax, (label, conns) in zip(axes.flat, panels, strict=True):
        servers = _order({k[1] for k in stats if k[0] in conns})
        for i, server in enumerate(servers):
            points = sorted(
                (conns[sc], stats[(sc, server)]) for sc in conns if (sc, server) in stats
            )
            if len(points) < 2:
                continue
            xs = [p[0] for p in points]
            ys = [p[1][0] for p in points]
            lo = [p[1][0] - p[1][1] for p in points]
            hi = [p[1][2] - p[1][0] for p in points]
            ax.errorbar(
                xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=server, color=_color(server, i)
            )
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(conns.values())))
        ax.set_xticklabels([str(c) for c in sorted(set(conns.values()))])
        ax.set_xlabel("concurrent connections (1 message in flight each)")
        ax.set_ylabel("messages/s (median, min-max)")
        ax.yaxis.set_major_formatter(lambda v, _: f"{v / 1000:,.0f}k")
        ax.set_ylim(bottom=0)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=8, frameon=False)
    title = "Throughput as connections grow"
    fig.suptitle(title, fontsize=11)
    _layout(fig, text, top=1 - 0.35 / fig.get_figheight())
    _save(fig, path, title, used)
    plt.close(fig)
    return True


def memory_chart(plt: Any, runs: list[dict[str, Any]], path: Path) -> bool:
    mem = [r for r in runs if r["scenario"] == "memory"]
    stats = medians(mem, "bytes_per_conn")
    if not stats:
        return False
    servers = _order({k[1] for k in stats})
    values = [stats[("memory", s)][0] for s in servers]
    held = max((r.get("held", 0) for r in mem if r.get("ok")), default=0)
    width = 9.0
    text = caption(mem, width)
    fig, axes = _figure(plt, 1, 1, width, 0.42 * len(servers) + 1.4, text)
    ax = axes[0][0]
    colors = [_color(s, i) for i, s in enumerate(servers)]
    ax.barh(servers, [max(v, 1.0) for v in values], color=colors)
    ax.invert_yaxis()
    ax.set_xscale("log")
    for y, v in enumerate(values):
        ax.text(max(v, 1.0) * 1.08, y, f"{v:,.0f} B", va="center", fontsize=8)
    ax.set_xlabel(f"server memory (RSS) per idle connection, bytes, log scale; {held:,} held")
    title = "Memory per idle connection"
    ax.set_title(title, fontsize=11)
    ax.set_xlim(right=max(values) * 4)
    _layout(fig, text, top=1.0)
    _save(fig, path, title, mem)
    plt.close(fig)
    return True


def render(paths: list[Path], out: Path) -> list[Path]:
    runs = load(paths)
    info = scenario_info(runs)
    plt = _setup()
    out.mkdir(parents=True, exist_ok=True)
    scenario_order = list(dict.fromkeys(r["scenario"] for r in runs))
    tcp = [s for s in scenario_order if info.get(s, {}).get("mode") in ("raw", "pbframe")]
    ws = [s for s in scenario_order if info.get(s, {}).get("mode") == "ws"]
    written = []
    charts = [
        ("tcp-throughput.svg", lambda p: throughput_chart(plt, runs, tcp, "TCP echo", p)),
        ("ws-throughput.svg", lambda p: throughput_chart(plt, runs, ws, "WebSocket echo", p)),
        ("scaling.svg", lambda p: scaling_chart(plt, runs, p)),
        ("memory.svg", lambda p: memory_chart(plt, runs, p)),
    ]
    for name, draw in charts:
        if draw(out / name):
            written.append(out / name)
    for path in paths:  # the data behind the charts, next to them
        target = out / path.name
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", type=Path, help="files written by bench/run.py --json-out")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "assets" / "bench",
        help="directory for the SVG files (default: docs/assets/bench)",
    )
    ap.add_argument(
        "--check", "--dry-run", action="store_true", help="only validate the input files"
    )
    ap.add_argument("--note", help="a line added to every caption, e.g. about the conditions")
    args = ap.parse_args(argv)
    if args.note:
        NOTE[:] = [args.note]
    if args.check and not all(p.exists() for p in args.json):
        # Nothing to validate yet (the command is being checked before a run): arguments only.
        print("arguments OK; input files not written yet")
        return 0
    runs = load(args.json)
    if args.check:
        print(f"{len(runs)} runs in {len(args.json)} file(s)")
        return 0
    written = render(args.json, args.out)
    if not written:
        print("nothing to chart in these files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
