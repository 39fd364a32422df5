"""rung's version, in the one place the package metadata and every module read it from."""

__version__ = "0.1.0"
