pytest_plugins = ["gev_core.testing"]
