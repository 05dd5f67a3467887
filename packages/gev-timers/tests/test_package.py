from __future__ import annotations

from importlib import resources

import gev_timers


def test_public_api() -> None:
    for name in gev_timers.__all__:
        assert hasattr(gev_timers, name), name
    assert gev_timers.__version__ == "0.1.0"


def test_typed_marker_is_shipped() -> None:
    assert resources.files("gev_timers").joinpath("py.typed").is_file()


def test_default_deadline_source_shape() -> None:
    # The two calls an event loop needs, and nothing scheduled at first.
    timers = gev_timers.LoopTimers()
    assert timers.next_deadline() is None
    timers.run_due(timers.clock.now())
