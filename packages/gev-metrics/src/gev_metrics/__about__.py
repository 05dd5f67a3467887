"""Version of the gev-metrics distribution (read by hatchling)."""

__version__ = "0.1.0"
"""The version of the gev-metrics distribution (PEP 440); hatchling reads it from here."""
