"""``proxy_protocol`` and its settings, from ``gev serve`` options or ``Server(options=...)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._parse import DEFAULT_MAX_SIZE
from ._preamble import DEFAULT_TIMEOUT, POLICIES, ProxyProtocol

__all__ = ["preamble_from_options"]

_SETTINGS = (
    "proxy_protocol_policy",
    "proxy_protocol_trusted",
    "proxy_protocol_timeout",
    "proxy_protocol_max_size",
    "proxy_protocol_version",
)


def _networks(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    if not out:
        raise ValueError("proxy_protocol_trusted names no network")
    return out


def preamble_from_options(options: Mapping[str, Any]) -> ProxyProtocol | None:
    """The :class:`ProxyProtocol` that ``options`` ask for, or ``None`` if they ask for none.

    ``proxy_protocol``: ``True`` (or ``"required"``, ``"optional"``, or a ready
    :class:`ProxyProtocol`). With it: ``proxy_protocol_trusted`` (CIDRs, a list or a comma
    string), ``proxy_protocol_policy``, ``proxy_protocol_timeout`` (seconds; ``0`` for none),
    ``proxy_protocol_max_size`` (bytes), ``proxy_protocol_version`` (``"1"``, ``"2"`` or
    ``"any"``).

    :raises ValueError: a bad value, or a setting without ``proxy_protocol``.
    """
    enabled = options.get("proxy_protocol")
    given = [name for name in _SETTINGS if options.get(name) is not None]
    if not enabled:
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{flags} need(s) --proxy-protocol (proxy_protocol=True)")
        return None
    if isinstance(enabled, ProxyProtocol):
        if given:
            raise ValueError("give the settings to the ProxyProtocol object, not as options")
        return enabled
    policy = options.get("proxy_protocol_policy") or "required"
    if isinstance(enabled, str):
        if enabled not in POLICIES:
            raise ValueError(f"proxy_protocol must be True, one of {POLICIES} or a ProxyProtocol")
        if options.get("proxy_protocol_policy") not in (None, enabled):
            raise ValueError("proxy_protocol and proxy_protocol_policy disagree")
        policy = enabled
    elif enabled is not True:
        raise ValueError(f"proxy_protocol must be True, one of {POLICIES} or a ProxyProtocol")
    timeout = options.get("proxy_protocol_timeout")
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    version = str(options.get("proxy_protocol_version") or "any")
    if version not in ("1", "2", "any"):
        raise ValueError(f"proxy_protocol_version must be 1, 2 or any, not {version!r}")
    max_size = options.get("proxy_protocol_max_size")
    return ProxyProtocol(
        trusted=_networks(options.get("proxy_protocol_trusted")),
        policy=policy,
        versions=(1, 2) if version == "any" else (int(version),),
        max_size=DEFAULT_MAX_SIZE if max_size is None else int(max_size),
        timeout=timeout or None,
    )
