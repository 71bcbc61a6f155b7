"""The rmsfleet collector: ingest, store, evaluate, query, metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rmsfleet")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
