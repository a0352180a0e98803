"""KEPT: knowledge-enhanced pretraining (ERNIE-style knowledge masking and KG fusion)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kept")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
