# The fixtures third-party plugin authors get are the ones our own tests use.
pytest_plugins = ["gev_core.testing"]
