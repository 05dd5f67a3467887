"""``ssl.SSLContext`` builders with the defaults a server (or a client of one) should have.

:func:`server_context` is what ``gev serve --certfile`` builds, and what ``Server(ssl=...)``
expects from code; :func:`client_context` is the outbound side. Both start from the standard
library's ``ssl.create_default_context`` (OpenSSL's vetted cipher suites, no compression) and
then pin what gev promises: TLS 1.2 or newer, renegotiation refused, the SNI name recorded.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping, Sequence

from ._tls import ServerNameCallback, prepare_context, set_sni

__all__ = ["VERIFY_CLIENT_MODES", "client_context", "server_context"]

#: Accepted values of ``verify_client``: no client certificate asked for, asked for and checked
#: if sent, or required.
VERIFY_CLIENT_MODES = ("none", "optional", "required")

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

PasswordType = str | bytes | Callable[[], str | bytes] | None


def _version(value: str | ssl.TLSVersion) -> ssl.TLSVersion:
    if isinstance(value, ssl.TLSVersion):
        version = value
    else:
        try:
            version = _VERSIONS[value]
        except KeyError:
            raise ValueError(
                f"minimum_version must be one of {sorted(_VERSIONS)}, not {value!r}"
            ) from None
    if version < ssl.TLSVersion.TLSv1_2 or version == ssl.TLSVersion.MINIMUM_SUPPORTED:
        raise ValueError("TLS versions below 1.2 are not supported")
    return version


def _load_chain(
    context: ssl.SSLContext, certfile: str, keyfile: str | None, password: PasswordType
) -> None:
    for what, path in (("certfile", certfile), ("keyfile", keyfile)):
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"{what} {path!r}: no such file")
    try:
        context.load_cert_chain(certfile, keyfile, password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"the private key in {keyfile or certfile!r} does not match the certificate"
                f" in {certfile!r}"
            ) from None
        files = certfile if keyfile is None else f"{certfile!r} and {keyfile!r}"
        raise ValueError(
            f"cannot load the certificate chain from {files}: {exc.reason or exc}"
            " (PEM certificate first, then its intermediates; an unencrypted key or a password)"
        ) from None


def _load_cas(context: ssl.SSLContext, ca_certs: str) -> None:
    try:
        if os.path.isdir(ca_certs):
            context.load_verify_locations(capath=ca_certs)
        elif os.path.isfile(ca_certs):
            context.load_verify_locations(cafile=ca_certs)
        else:
            raise ValueError(f"ca_certs {ca_certs!r}: no such file or directory")
    except ssl.SSLError as exc:
        raise ValueError(
            f"cannot load CA certificates from {ca_certs!r}: {exc.reason or exc}"
        ) from None


def server_context(
    certfile: str,
    keyfile: str | None = None,
    *,
    password: PasswordType = None,
    ca_certs: str | None = None,
    verify_client: str = "none",
    alpn: Sequence[str] | None = None,
    minimum_version: str | ssl.TLSVersion = "TLSv1.2",
    ciphers: str | None = None,
    sni: Mapping[str, ssl.SSLContext] | ServerNameCallback | None = None,
) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for serving TLS, with sane defaults.

    TLS 1.2 and 1.3 (``minimum_version="TLSv1.3"`` for 1.3 only), OpenSSL's default cipher
    suites as Python selects them, no compression, renegotiation refused
    (``ssl.OP_NO_RENEGOTIATION``), session tickets on.

    :param certfile: PEM file with the certificate, then its intermediate CA certificates
        (and the key, when ``keyfile`` is not given).
    :param keyfile: PEM file with the private key.
    :param password: the key's password, or a callable returning it.
    :param ca_certs: CA certificates (a PEM file or an OpenSSL hashed directory) that client
        certificates must chain to.
    :param verify_client: ``"none"`` (default), ``"optional"`` (checked when sent) or
        ``"required"`` (the handshake fails without one); the last two need ``ca_certs``.
    :param alpn: the application protocols the server accepts, in its order of preference
        (``["h2", "http/1.1"]``); the client's first match wins. ``None``: no ALPN.
    :param minimum_version: ``"TLSv1.2"`` or ``"TLSv1.3"``.
    :param ciphers: an OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's).
    :param sni: certificates per server name: a mapping of names (``"*.example.com"`` matches
        one label) to contexts, or ``select(name) -> SSLContext | None`` (called during each
        handshake, on the loop thread). This context serves the names it does not know.
    :raises ValueError: a file is missing or unreadable, the key does not match the
        certificate, or an option value is wrong. The message names the file.
    """
    if verify_client not in VERIFY_CLIENT_MODES:
        raise ValueError(
            f"verify_client must be one of {VERIFY_CLIENT_MODES}, not {verify_client!r}"
        )
    if verify_client != "none" and ca_certs is None:
        raise ValueError(f"verify_client={verify_client!r} needs ca_certs to verify clients with")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _version(minimum_version)
    _load_chain(context, certfile, keyfile, password)
    if ca_certs is not None:
        _load_cas(context, ca_certs)
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[verify_client]
    if ciphers is not None:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError:
            raise ValueError(f"no cipher matches {ciphers!r}") from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if sni is not None:
        set_sni(context, sni)
    return prepare_context(context)


def client_context(
    cafile: str | None = None,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    password: PasswordType = None,
    alpn: Sequence[str] | None = None,
    minimum_version: str | ssl.TLSVersion = "TLSv1.2",
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for outbound TLS connections: the server's certificate is verified
    (against ``cafile``, or the system's CA store) and its name checked.

    :param cafile: PEM file of the CAs to trust instead of the system's.
    :param certfile: a client certificate (PEM, intermediates after it) for servers that ask.
    :param keyfile: its private key.
    :param password: the key's password, or a callable returning it.
    :param alpn: the application protocols to offer, in order of preference.
    :param minimum_version: ``"TLSv1.2"`` or ``"TLSv1.3"``.
    :param check_hostname: check the certificate against ``server_hostname`` (keep it on;
        turning it off accepts any certificate the CAs signed, for any name).
    :raises ValueError: a file is missing or unreadable, or the key does not match.
    """
    if cafile is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        # Only these CAs: create_default_context loads the system's store when given none.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load_cas(context, cafile)
    context.minimum_version = _version(minimum_version)
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.check_hostname = check_hostname
    if certfile is not None:
        _load_chain(context, certfile, keyfile, password)
    elif keyfile is not None:
        raise ValueError("keyfile given without certfile")
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context
