"""eumirror: a verified, atomically published mirror of Eucalyptus eustore catalogs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eumirror")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
