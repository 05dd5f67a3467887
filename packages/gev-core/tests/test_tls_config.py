"""TLS configuration: the context builders, ``ServeConfig``'s TLS fields and ``gev serve``'s
TLS options. Contexts are proven by real handshakes over a socket pair."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

trustme = pytest.importorskip("trustme")

from gev_core import client_context, server_context  # noqa: E402
from gev_core._cli import build_parser, config_from_args, main  # noqa: E402
from gev_core._config import DEFAULT_TLS_HANDSHAKE_TIMEOUT, ServeConfig  # noqa: E402
from gev_core.testing import TLSCertificates, TLSFiles, tls_certificates  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SRC_DIRS = [ROOT / "packages" / "gev-core" / "src", ROOT / "packages" / "gev-ringbuffer" / "src"]


@pytest.fixture(autouse=True)
def _gev_logger_restored() -> Iterator[None]:
    # main(["serve", ...]) in-process configures the "gev" logger as the command does (a
    # handler on this test's captured stderr, propagation off): undo it, or every later test's
    # server logs into a closed stream and caplog stops seeing gev's records.
    log = logging.getLogger("gev")
    saved = (log.handlers[:], log.level, log.propagate)
    yield
    log.handlers[:] = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]


@pytest.fixture(scope="module")
def certs() -> TLSCertificates:
    return tls_certificates()


@pytest.fixture(scope="module")
def files(certs: TLSCertificates, tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return certs.write(tmp_path_factory.mktemp("tls"))


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str | None = "localhost"
) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """Both ends of a real TLS connection over a socket pair (the server handshakes in a thread)."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            result["server"] = server.wrap_socket(a, server_side=True)
        except Exception as exc:
            result["error"] = exc
            a.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        tls_client = client.wrap_socket(b, server_hostname=hostname)
    except BaseException:
        b.close()
        raise
    finally:
        thread.join(10)
    if "error" in result:
        tls_client.close()
        raise result["error"]  # type: ignore[misc]
    tls_server = result["server"]
    assert isinstance(tls_server, ssl.SSLSocket)
    return tls_server, tls_client


def exchange(tls_server: ssl.SSLSocket, tls_client: ssl.SSLSocket) -> None:
    tls_client.sendall(b"ping")
    assert tls_server.recv(10) == b"ping"
    tls_server.sendall(b"pong")
    assert tls_client.recv(10) == b"pong"
    tls_client.close()
    tls_server.close()


# ------------------------------------------------------------------------- server_context


def test_server_context_defaults(files: TLSFiles) -> None:
    ctx = server_context(files.cert, files.key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.sni_callback is not None  # records the server name
    tls_server, tls_client = handshake(ctx, client_context(files.ca))
    assert tls_server.version() == "TLSv1.3"
    exchange(tls_server, tls_client)


def test_server_context_key_in_the_certificate_file(files: TLSFiles, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(Path(files.cert).read_bytes() + Path(files.key).read_bytes())
    ctx = server_context(str(both))
    exchange(*handshake(ctx, client_context(files.ca)))


def test_server_context_alpn_and_tls13_only(files: TLSFiles) -> None:
    ctx = server_context(files.cert, files.key, alpn=["h2", "http/1.1"], minimum_version="TLSv1.3")
    client = client_context(files.ca, alpn=["http/1.1", "h2"])
    tls_server, tls_client = handshake(ctx, client)
    assert tls_server.selected_alpn_protocol() == "h2"  # the server's preference wins
    exchange(tls_server, tls_client)
    old = client_context(files.ca)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(ctx, old)


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_server_context_verifies_client_certificates(files: TLSFiles, mode: str) -> None:
    ctx = server_context(files.cert, files.key, ca_certs=files.ca, verify_client=mode)
    with_cert = client_context(files.ca, certfile=files.client_cert, keyfile=files.client_key)
    tls_server, tls_client = handshake(ctx, with_cert)
    tls_client.sendall(b"x")
    assert tls_server.recv(1) == b"x"
    peer = tls_server.getpeercert()
    assert peer is not None
    assert dict(item[0] for item in peer["subject"])["commonName"] == "gev test client"
    exchange(tls_server, tls_client)

    if mode == "optional":
        exchange(*handshake(ctx, client_context(files.ca)))
        return
    # TLS 1.3: the client's handshake completes before the server checks; its first read fails.
    try:
        tls_server, tls_client = handshake(ctx, client_context(files.ca))
    except ssl.SSLError as exc:
        assert "CERTIFICATE" in str(exc).upper()
        return
    tls_client.sendall(b"x")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_client.recv(1)
        tls_client.recv(1)
    tls_client.close()


def test_server_context_ciphers_for_tls12(files: TLSFiles) -> None:
    ctx = server_context(files.cert, files.key, ciphers="ECDHE+AESGCM")
    client = client_context(files.ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    tls_server, tls_client = handshake(ctx, client)
    cipher = tls_server.cipher()
    assert cipher is not None and "GCM" in cipher[0]
    exchange(tls_server, tls_client)


def test_server_context_sni_mapping(files: TLSFiles, certs: TLSCertificates) -> None:
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.ca.issue_cert("api.example").configure_cert(other)
    ctx = server_context(files.cert, files.key, sni={"api.example": other})
    tls_server, tls_client = handshake(ctx, client_context(files.ca), hostname="api.example")
    peer = tls_client.getpeercert()
    assert peer is not None and ("DNS", "api.example") in peer["subjectAltName"]
    exchange(tls_server, tls_client)


def test_server_context_errors_name_the_file(files: TLSFiles, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=r"certfile '.*missing\.pem': no such file"):
        server_context(missing)
    with pytest.raises(ValueError, match=r"keyfile '.*missing\.pem': no such file"):
        server_context(files.cert, missing)
    # A key of another certificate.
    with pytest.raises(ValueError, match="does not match the certificate"):
        server_context(files.cert, files.client_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="cannot load the certificate chain"):
        server_context(str(garbage), files.key)
    with pytest.raises(ValueError, match="cannot load CA certificates"):
        server_context(files.cert, files.key, ca_certs=str(garbage))
    with pytest.raises(ValueError, match="no such file or directory"):
        server_context(files.cert, files.key, ca_certs=missing)


def test_server_context_option_errors(files: TLSFiles) -> None:
    with pytest.raises(ValueError, match="needs ca_certs"):
        server_context(files.cert, files.key, verify_client="required")
    with pytest.raises(ValueError, match="verify_client must be one of"):
        server_context(files.cert, files.key, verify_client="yes")
    with pytest.raises(ValueError, match="minimum_version must be one of"):
        server_context(files.cert, files.key, minimum_version="TLSv1.1")
    with pytest.raises(ValueError, match=r"below 1\.2"):
        server_context(files.cert, files.key, minimum_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ValueError, match="no cipher matches"):
        server_context(files.cert, files.key, ciphers="NOT-A-CIPHER")


def test_server_context_ca_directory(files: TLSFiles, tmp_path: Path) -> None:
    ctx = server_context(files.cert, files.key, ca_certs=str(tmp_path), verify_client="optional")
    assert ctx.verify_mode == ssl.CERT_OPTIONAL


# ------------------------------------------------------------------------- client_context


def test_client_context_trusts_only_the_given_ca(files: TLSFiles) -> None:
    ctx = client_context(files.ca)
    assert len(ctx.get_ca_certs()) == 1
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    server = server_context(files.cert, files.key)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server, ctx, hostname="other.example")
    stranger = client_context(files.client_cert)  # a leaf, not our CA: nothing verifies
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, stranger)


def test_client_context_errors(files: TLSFiles) -> None:
    with pytest.raises(ValueError, match="keyfile given without certfile"):
        client_context(files.ca, keyfile=files.client_key)
    with pytest.raises(ValueError, match="no such file"):
        client_context(files.ca, certfile="/nonexistent/client.pem")
    unchecked = client_context(files.ca, check_hostname=False)
    exchange(*handshake(server_context(files.cert, files.key), unchecked, hostname=None))


# ----------------------------------------------------------------------------- ServeConfig


def test_serve_config_tls_fields(files: TLSFiles) -> None:
    plain = ServeConfig("app:Echo")
    assert not plain.tls and plain.ssl_context() is None
    assert plain.tls_handshake_timeout == DEFAULT_TLS_HANDSHAKE_TIMEOUT
    config = ServeConfig(
        "app:Echo",
        certfile=files.cert,
        keyfile=files.key,
        ca_certs=files.ca,
        verify_client="required",
        alpn=["http/1.1"],
        tls_handshake_timeout=2.5,
    )
    assert config.tls
    ctx = config.ssl_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED
    options = config.server_kwargs()["options"]
    assert options["certfile"] == files.cert and options["verify_client"] == "required"
    assert options["alpn"] == ["http/1.1"] and options["tls_handshake_timeout"] == 2.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keyfile": "k.pem"}, "keyfile without certfile"),
        ({"ca_certs": "ca.pem"}, "ca_certs without certfile"),
        ({"alpn": ["h2"]}, "alpn without certfile"),
        ({"verify_client": "required"}, "verify_client without certfile"),
        ({"certfile": "c.pem", "verify_client": "required"}, "needs ca_certs"),
        ({"certfile": "c.pem", "verify_client": "always"}, "verify_client must be one of"),
        ({"certfile": "c.pem", "tls_handshake_timeout": 0}, "must be > 0"),
    ],
)
def test_serve_config_tls_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServeConfig("app:Echo", **kwargs)  # type: ignore[arg-type]


def _parse(*args: str) -> ServeConfig:
    argv = ["app:Echo", *args]
    return config_from_args(build_parser(None).parse_args(["serve", *argv]), argv)


def test_cli_options_parse_into_the_config(files: TLSFiles) -> None:
    config = _parse(
        "--certfile",
        files.cert,
        "--keyfile",
        files.key,
        "--ca-certs",
        files.ca,
        "--verify-client",
        "--alpn",
        "h2,http/1.1",
        "--alpn",
        "x",
        "--tls-handshake-timeout",
        "3.5",
    )
    assert (config.certfile, config.keyfile, config.ca_certs) == (files.cert, files.key, files.ca)
    assert config.verify_client == "required"
    assert config.alpn == ["h2", "http/1.1", "x"]
    assert config.tls_handshake_timeout == 3.5
    assert "certfile" not in config.options  # core options are not plugin options
    optional = _parse("--certfile", files.cert, "--ca-certs", files.ca, "--verify-client-optional")
    assert optional.verify_client == "optional"
    assert _parse().verify_client == "none" and not _parse().tls


@pytest.mark.parametrize("verify", ["none", "optional", "required"])
def test_worker_args_carry_the_tls_options(files: TLSFiles, verify: str) -> None:
    config = ServeConfig(
        "app:Echo",
        certfile=files.cert,
        keyfile=files.key,
        ca_certs=files.ca if verify != "none" else None,
        verify_client=verify,
        alpn=["h2", "http/1.1"],
        tls_handshake_timeout=4.0,
    )
    again = _parse(*config.worker_args()[1:])
    for name in ("certfile", "keyfile", "ca_certs", "verify_client", "alpn"):
        assert getattr(again, name) == getattr(config, name), name
    assert again.tls_handshake_timeout == 4.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--verify-client"], "without certfile"),
        (["--certfile", "{cert}", "--verify-client"], "needs ca_certs"),
        (["--tls-handshake-timeout", "0"], "must be > 0"),
        (["--certfile", "{missing}"], "no such file"),
        (["--certfile", "{cert}", "--keyfile", "{client_key}"], "does not match"),
    ],
)
def test_gev_serve_tls_usage_errors_exit_2(
    files: TLSFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    subst = {"cert": files.cert, "client_key": files.client_key, "missing": str(tmp_path / "x")}
    code = main(["serve", "app:Echo", *(a.format(**subst) for a in args)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "error:" in err


APP = """
from gev_core import Handler


class Echo(Handler):
    def on_message(self, conn, ctx, data):
        return data
"""


@pytest.mark.parametrize("workers", [None, 2], ids=["one-process", "workers-2"])
def test_gev_serve_serves_tls(files: TLSFiles, tmp_path: Path, workers: int | None) -> None:
    (tmp_path / "app.py").write_text(APP)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, SRC_DIRS)))
    address = f"127.0.0.1:{port}"
    tls = ["--certfile", files.cert, "--keyfile", files.key, "--alpn", "echo/1"]
    if workers is not None:
        tls += ["--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gev_core", "serve", "app:Echo", "--address", address, *tls],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"gev serve exited: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline, "gev serve did not listen"
                time.sleep(0.05)
        raw.close()
        # Each connection may land on another worker: every one must speak TLS.
        for i in range(2 * (workers or 1)):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            ctx = client_context(files.ca, alpn=["echo/1"])
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"over TLS %d" % i)
                assert tls.recv(100) == b"over TLS %d" % i
                assert tls.selected_alpn_protocol() == "echo/1"
        proc.terminate()  # SIGTERM: a graceful stop
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()  # type: ignore[union-attr]
