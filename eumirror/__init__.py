"""eumirror: a verified, atomically published mirror of Eucalyptus eustore catalogs."""

__version__ = "0.1.0"
"""The one place the version is written (pyproject reads it): no metadata lookup at start-up."""

__all__ = ["__version__"]
