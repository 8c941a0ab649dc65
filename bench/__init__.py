"""carbonbench: measure the energy and carbon of neural-network architectures."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("carbonbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
