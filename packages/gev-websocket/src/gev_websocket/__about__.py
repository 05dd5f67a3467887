"""Version of the gev-websocket distribution (read by hatch)."""

__version__ = "0.1.0"
