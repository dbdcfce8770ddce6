"""Config defaults that code outside the config models needs before they are imported (`once`'s early walk,
sync/earlyscan.py): the models in config.py take theirs from here."""

from __future__ import annotations

from pathlib import Path

IGNORE = ("*.tmp", "*.part", "*.swp", ".~*", "~$*")
"""source.ignore: the temp files of common writers (editors, downloads, Office) never count as data."""

COPY_WORKERS = 4
"""source.copy_workers: batches copied at once (`once` forks that many copy processes at its start)."""

STATE_DIR = Path(".domino-sync/state")
"""state_dir, relative to the working folder."""
