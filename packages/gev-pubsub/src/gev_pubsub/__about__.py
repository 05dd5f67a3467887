"""Version of the gev-pubsub distribution (read by hatchling)."""

__version__ = "0.1.0"
