"""Version of the gev-websocket distribution (read by hatch)."""

__version__ = "0.1.0"
"""The version of the gev-websocket distribution (PEP 440); hatchling reads it from here."""
