"""RCIoTs agent: runs on each device, enrolls, keeps a WebSocket session to the controller and
applies the desired state it receives.

The smallest deployable part: it depends only on the base requirements of the distribution
and never imports ``rciots.controller`` or the controller's dependencies.
"""

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__ = metadata.version("rciots")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
    __version__ = "0+unknown"
