"""The installed version, in a module of its own so that files deep in the package can record it."""

__version__ = "0.1.0"
