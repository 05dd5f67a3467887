"""The gev plugin: entry point, protocol registration, gev serve option, first-bytes choice."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import gev_protobuf
import pytest
from gev_core import Handler, ProtocolRegistry, get_plugin_manager
from gev_core.testing import connect, recv_exactly, serve
from gev_protobuf import ProtobufProtocol, pack_message, plugin

PACKAGE = Path(__file__).resolve().parent.parent
SRC_PATHS = [
    PACKAGE / "src",
    PACKAGE.parent / "gev-core" / "src",
    PACKAGE.parent / "gev-ringbuffer" / "src",
]


class Echo(Handler):
    def on_message(self, conn: Any, ctx: Any, data: Any) -> Any:
        return (ctx, data) if conn.protocol.name == "protobuf" else data


def plugin_manager() -> Any:
    pm = get_plugin_manager(autoload=False)
    pm.register(plugin, name="protobuf")
    return pm


def test_pyproject_advertises_the_plugin_module() -> None:
    text = (PACKAGE / "pyproject.toml").read_text()
    assert '[project.entry-points.gev]\nprotobuf = "gev_protobuf.plugin"' in text


def test_plugin_module_holds_hooks_only() -> None:
    hooks = sorted(n for n in vars(plugin) if n.startswith("gev_"))
    assert hooks == ["gev_addoption", "gev_register_protocols", "gev_select_protocol"]
    assert plugin.gev_register_protocols() == [ProtobufProtocol]


def installed_env(tmp_path: Path) -> dict[str, str]:
    """An environment where gev-protobuf looks installed: a dist-info advertising the real
    module ahead of the source trees, as an install would (without installing)."""
    site = tmp_path / "site"
    info = site / "gev_protobuf-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gev-protobuf\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[gev]\nprotobuf = gev_protobuf.plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [site, *SRC_PATHS]))}
    env.pop("GEV_DISABLE_PLUGIN_AUTOLOAD", None)
    return env


def test_entry_point_is_discovered(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from gev_core import ProtocolRegistry, get_plugin_manager
        pm = get_plugin_manager()
        registry = ProtocolRegistry(pm)
        print(registry.get("protobuf").__qualname__, registry.provider("protobuf").entry_point)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=installed_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ProtobufProtocol", "gev_protobuf.plugin"]


def test_gev_serve_with_the_option(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "class Echo:\n    def on_message(self, conn, ctx, data):\n        return ctx, data\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "gev_core", "serve", "app:Echo", "--app-dir", str(tmp_path)]
    argv += ["--protocol", "protobuf", "--protobuf-max-frame-size", "100"]
    server = subprocess.Popen(
        [*argv, "--address", f"127.0.0.1:{port}"],
        env=installed_env(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "not serving"
                time.sleep(0.05)
        with sock:
            frame = pack_message("m", b"x" * 97)  # length 100: the limit
            sock.sendall(frame)
            assert recv_exactly(sock, len(frame)) == frame
            sock.sendall((101).to_bytes(4, "big"))
            assert sock.recv(10) == b""
    finally:
        server.terminate()
        _, err = server.communicate(timeout=10)
    assert "exceeds max_frame_size 100" in err
    bad = subprocess.run(
        [*argv[:-1], "1"], env=installed_env(tmp_path / "b"), capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "--protobuf-max-frame-size: must be between 2 and" in bad.stderr


def test_protocol_by_name_reads_its_options() -> None:
    pm = plugin_manager()
    assert "protobuf" in ProtocolRegistry(pm).names()
    options = {"protobuf_max_frame_size": 64}
    with serve(Echo(), protocol="protobuf", plugins=pm, options=options) as server:
        protocol = server.protocol
        assert isinstance(protocol, ProtobufProtocol) and protocol.max_frame_size == 64
        with connect(server) as sock:
            frame = pack_message("m", b"x" * 61)  # length 64: the limit itself
            sock.sendall(frame)
            assert recv_exactly(sock, len(frame)) == frame
            sock.sendall(pack_message("m", b"x" * 62))
            assert sock.recv(100) == b""


def test_bad_option_fails_the_server() -> None:
    with pytest.raises(ValueError, match="protobuf_max_frame_size must be between 2"):
        serve(
            Echo(),
            protocol="protobuf",
            plugins=plugin_manager(),
            options={"protobuf_max_frame_size": 0},
        ).__enter__()


def test_gev_serve_option() -> None:
    parser = argparse.ArgumentParser(prog="gev serve", exit_on_error=False)
    plugin_manager().hook.gev_addoption(parser=parser)
    assert parser.parse_args([]).protobuf_max_frame_size is None
    args = parser.parse_args(["--protobuf-max-frame-size", "65536"])
    assert args.protobuf_max_frame_size == 65536
    assert "--protobuf-max-frame-size BYTES" in parser.format_help()
    for bad in ("1", "4GiB", str(2**32)):
        with pytest.raises(argparse.ArgumentError):
            parser.parse_args(["--protobuf-max-frame-size", bad])


def test_select_hook_answers_for_protobuf_only() -> None:
    hook: Any = plugin.gev_select_protocol

    class Conn:
        protocol = None  # not the core's selector: the default limit applies

    frame = pack_message("msg1", b"")
    assert hook(connection=Conn(), data=frame, candidates=["line"]) is None
    assert hook(connection=Conn(), data=frame, candidates=["line", "protobuf"]) == "protobuf"
    assert hook(connection=Conn(), data=b"hello\n", candidates=["protobuf", "line"]) is None


def test_select_hook_judges_by_the_configured_limit() -> None:
    pm = plugin_manager()
    small = ProtobufProtocol(max_frame_size=16)
    with serve(Echo(), protocol=[small, "line"], plugins=pm) as server:
        with connect(server) as sock:  # within the limit: protobuf
            sock.sendall(pack_message("m", b"x" * 13))
            assert recv_exactly(sock, 20) == pack_message("m", b"x" * 13)
        with connect(server) as sock:
            # A frame header above the limit is not protobuf: the fallback gets it.
            sock.sendall(pack_message("m", b"x" * 14) + b"\n")
            assert recv_exactly(sock, 22) == pack_message("m", b"x" * 14) + b"\n"


def test_import_is_light() -> None:
    # Framing-only users (clients) don't load the server side until they ask for it.
    code = "import sys, gev_protobuf; print('gev_core' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, SRC_PATHS))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr
    assert gev_protobuf.ProtobufProtocol is ProtobufProtocol
