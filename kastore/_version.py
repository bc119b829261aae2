from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("kastore-service")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
