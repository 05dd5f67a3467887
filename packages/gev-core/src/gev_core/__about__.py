"""Version of the gev-core distribution."""

__version__ = "0.1.0"
"""The version of the gev-core distribution (PEP 440); hatchling reads it from here."""
