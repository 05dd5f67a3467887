"""The sampler against loops that keep counters (the LoopStats interface), faked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gev_metrics import CLOSE_REASONS, COUNTER_FIELDS, LoopStats, ServerMetrics
from metrics_support import samples
from prometheus_client import CollectorRegistry, generate_latest


@dataclass
class Stats:
    accepted: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    backpressure_pauses: int = 0
    handler_errors: int = 0
    closed_eof: int = 0
    closed_reset: int = 0
    closed_error: int = 0
    closed_local: int = 0
    closed_idle: int = 0
    closed_hard_cap: int = 0
    closed_budget: int = 0
    closed_protocol_error: int = 0
    closed_handler_error: int = 0
    closed_stop: int = 0


class Loop:
    def __init__(self, index: int) -> None:
        self.index = index
        self.stats: LoopStats = Stats()
        self.connection_count = 0
        self.calls: list[Any] = []

    def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
        self.calls.append((fn, args))


class Proto:
    name = "websocket"


class FakeServer:
    def __init__(self) -> None:
        self.loops = [Loop(0), Loop(1)]
        self.protocol = Proto()
        self.num_loops = 2
        self.ready = True


def _with(base: tuple[tuple[str, str], ...], **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*base, *more.items())))


def _values(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(generate_latest(registry).decode())


def test_every_counter_is_exported_with_its_labels() -> None:
    server = FakeServer()
    registry = CollectorRegistry()
    metrics = ServerMetrics(server, registry=registry, worker="3", interval=0)
    s0, s1 = server.loops[0].stats, server.loops[1].stats
    s0.bytes_in, s1.bytes_in = 100, 23  # type: ignore[misc]
    s0.messages_out = 7  # type: ignore[misc]
    s1.closed_hard_cap = 2  # type: ignore[misc]
    server.loops[0].connection_count, server.loops[1].connection_count = 4, 1
    metrics.sync()
    base = (("protocol", "websocket"), ("worker", "3"))
    values = _values(registry)
    assert values["gev_received_bytes_total", base] == 123
    assert values["gev_sent_messages_total", base] == 7
    assert values["gev_connections_open", base] == 5
    assert values["gev_connections_closed_total", _with(base, reason="hard_cap")] == 2
    for field, family in COUNTER_FIELDS.items():
        assert (family, base) in values, field
    for reason in CLOSE_REASONS:
        assert ("gev_connections_closed_total", _with(base, reason=reason)) in values


def test_only_increments_are_added_and_resets_do_not_go_backwards() -> None:
    server = FakeServer()
    registry = CollectorRegistry()
    metrics = ServerMetrics(server, registry=registry, interval=0)
    stats = server.loops[0].stats
    stats.bytes_out = 10  # type: ignore[misc]
    metrics.sync()
    stats.bytes_out = 25  # type: ignore[misc]
    metrics.sync()
    metrics.sync()
    base = (("protocol", "websocket"), ("worker", "0"))
    assert _values(registry)["gev_sent_bytes_total", base] == 25


def test_loop_lag_is_probed_on_each_loop() -> None:
    server = FakeServer()
    registry = CollectorRegistry()
    metrics = ServerMetrics(server, registry=registry, interval=0)
    metrics.probe_lag()
    fn, args = server.loops[1].calls[0]
    fn(*args)  # as the loop runs it
    key = (("loop", "1"), ("protocol", "websocket"), ("worker", "0"))
    assert _values(registry)["gev_loop_lag_seconds_count", key] == 1
    assert not [k for k in _values(registry) if k[0] == "gev_loop_busy_ratio"]


def test_a_core_with_fewer_fields_is_read_as_far_as_it_goes() -> None:
    server = FakeServer()
    server.loops[0].stats = type("Partial", (), {"bytes_in": 5})()  # type: ignore[assignment]
    server.loops[1].stats = type("Partial", (), {"bytes_in": 6})()  # type: ignore[assignment]
    registry = CollectorRegistry()
    ServerMetrics(server, registry=registry, interval=0).sync()
    values = _values(registry)
    assert values["gev_received_bytes_total", (("protocol", "websocket"), ("worker", "0"))] == 11
    assert not [k for k in values if k[0] == "gev_sent_bytes_total"]
