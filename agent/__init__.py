"""domino-sync: watch a folder, copy complete files into a Domino Dataset mount, snapshot when rules fire."""

from __future__ import annotations

__version__ = "0.1.0"  # pyproject reads it (one place; no importlib.metadata at start-up)
