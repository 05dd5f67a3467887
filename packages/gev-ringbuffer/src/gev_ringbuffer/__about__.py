"""Version information for gev-ringbuffer."""

__version__ = "0.1.0"
"""The version of the gev-ringbuffer distribution (PEP 440); hatchling reads it from here."""
