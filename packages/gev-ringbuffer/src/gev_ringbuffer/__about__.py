"""Version information for gev-ringbuffer."""

__version__ = "0.1.0"
