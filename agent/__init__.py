"""domino-sync: watch a folder, copy complete files into a Domino Dataset mount, snapshot when rules fire."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("domino-sync")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
