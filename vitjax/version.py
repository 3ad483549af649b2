"""vitjax's version, in one place (read by the package, the metadata it writes, and ``--version``)."""

__version__ = "0.2.0"
