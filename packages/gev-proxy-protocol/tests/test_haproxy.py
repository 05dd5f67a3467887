"""The parser against the real sender: HAProxy (send-proxy, send-proxy-v2 with TLVs) in front of
a plain socket that records what arrives, for clients at known addresses."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from gev_proxy_protocol import parse_header
from gev_proxy_protocol.testing import HAProxy


class Recorder:
    """Accepts connections, keeps each one's bytes until the client's ``end``, answers ``ok``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(30)
        self.address = self.sock.getsockname()[:2]
        self.received: list[bytes] = []

    def serve_one(self) -> threading.Thread:
        def run() -> None:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(30)
                data = b""
                while not data.endswith(b"end"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.received.append(data)
                conn.sendall(b"ok")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


def _client(address: tuple[str, int], source: str, payload: bytes = b"hello end") -> tuple:
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(30)
        sock.bind((source, 0))
        sock.connect(address)
        sock.sendall(payload)
        assert sock.recv(10) == b"ok"
        return sock.getsockname()[:2]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_haproxy_headers_parse_to_the_clients_address(
    haproxy: str, recorder: Recorder, version: str
) -> None:
    with HAProxy(recorder.address, send_proxy=version) as proxy:
        done = recorder.serve_one()
        client = _client(proxy.address, "127.0.0.7")
        done.join(30)
    data = recorder.received[0]
    header = parse_header(data)
    assert header is not None, data
    assert header.version == int(version[1])
    assert header.source == client
    assert header.destination == proxy.address
    assert data[header.length :] == b"hello end"


def test_haproxy_v2_checksum_and_unique_id(haproxy: str, recorder: Recorder) -> None:
    with HAProxy(
        recorder.address,
        send_proxy="v2",
        proxy_v2_options=["crc32c", "unique-id"],
        frontend_lines=[r"unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%rt"],
    ) as proxy:
        done = recorder.serve_one()
        client = _client(proxy.address, "127.0.0.8")
        done.join(30)
    header = parse_header(recorder.received[0])
    assert header is not None and header.crc32c is not None  # and it was verified
    port = f"{client[1]:04X}"
    assert header.unique_id is not None
    assert header.unique_id.startswith(b"7F000008:" + port.encode())


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_haproxy_ipv6_clients(haproxy: str, recorder: Recorder, version: str) -> None:
    with HAProxy(recorder.address, send_proxy=version, host="::1") as proxy:
        done = recorder.serve_one()
        client = _client(proxy.address, "::1")
        done.join(30)
    header = parse_header(recorder.received[0])
    assert header is not None and header.family == "TCP6"
    assert header.source == ("::1", client[1])


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("openssl must be installed in CI (tools/install-system-deps.sh)")
        pytest.skip("no openssl")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=gev.test",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    pem = tmp_path / "server.pem"
    pem.write_bytes((tmp_path / "cert.pem").read_bytes() + (tmp_path / "key.pem").read_bytes())
    return tmp_path


def test_haproxy_v2_tls_details(haproxy: str, recorder: Recorder, certificate: Path) -> None:
    with HAProxy(
        recorder.address,
        send_proxy="v2",
        proxy_v2_options=["ssl", "ssl-cipher", "cert-sig", "cert-key", "authority", "crc32c"],
        tls_certificate=f"{certificate / 'server.pem'} alpn h2,http/1.1",
    ) as proxy:
        done = recorder.serve_one()
        context = ssl.create_default_context(cafile=str(certificate / "cert.pem"))
        context.check_hostname = False
        context.set_alpn_protocols(["h2"])
        with (
            socket.create_connection(proxy.address, timeout=30) as raw,
            context.wrap_socket(raw, server_hostname="app.gev.test") as tls,
        ):
            tls.sendall(b"secret end")
            assert tls.recv(10) == b"ok"
            version, cipher = tls.version(), tls.cipher()[0]  # type: ignore[index]
        done.join(30)
    data = recorder.received[0]
    header = parse_header(data)
    assert header is not None and data[header.length :] == b"secret end"
    assert header.authority == "app.gev.test"
    assert header.alpn == b"h2"
    info = header.ssl
    assert info is not None and info.tls and not info.client_cert_verified
    assert info.version == version and info.cipher == cipher
    assert info.key_alg == "RSA2048" and info.sig_alg == "RSA-SHA256"
