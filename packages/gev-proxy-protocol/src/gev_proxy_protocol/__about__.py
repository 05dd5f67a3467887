"""Version of the gev-proxy-protocol distribution (read by hatchling)."""

__version__ = "0.1.0"
"""The version of the gev-proxy-protocol distribution (PEP 440); hatchling reads it from here."""
