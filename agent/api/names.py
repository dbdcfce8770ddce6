"""Which dataset and tag names are valid, and how to make arbitrary text a safe tag name. Pure.

Shared by the emulator (to refuse bad names), the CLI and the tag templates (to make names safe).
Tags become mount paths `<dataset>@<tag>`, so they must be one safe path component and must not look like a
snapshot id.
"""

from __future__ import annotations

import re

MAX_NAME = 100
MAX_TAG = 100
DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SNAPSHOT_ID_PREFIX = "snapshot-"


def dataset_name_problem(name: str) -> str | None:
    """Why `name` is not a valid dataset name, or None."""
    if not name or not name.strip():
        return "name must not be empty"
    if len(name) > MAX_NAME:
        return f"name must be at most {MAX_NAME} characters"
    if "/" in name or "\\" in name or ".." in name or "@" in name:
        return "name must not contain '/', '\\\\', '..' or '@'"
    if not DATASET_NAME_RE.fullmatch(name) or name != name.strip():
        return "name may hold letters, digits, '.', '_', '-' and inner spaces, starting with a letter or digit"
    return None


def tag_problem(tag: str) -> str | None:
    """Why `tag` is not a valid tag name, or None."""
    if not tag:
        return "tag name must not be empty"
    if len(tag) > MAX_TAG:
        return f"tag name must be at most {MAX_TAG} characters"
    if ".." in tag:
        return "tag name must not contain '..'"
    if not TAG_RE.fullmatch(tag):
        return "tag name may hold letters, digits, '.', '_' and '-', starting with a letter or digit"
    if tag.startswith(SNAPSHOT_ID_PREFIX):
        return f"tag name must not start with {SNAPSHOT_ID_PREFIX!r} (it would shadow a snapshot id)"
    return None


def safe_tag(text: str) -> str:
    """`text` made a valid tag: other characters become '-', runs collapse, the result is trimmed and
    shortened. Empty results become 'tag'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    cleaned = cleaned.lstrip("._-")[:MAX_TAG].rstrip("._-")
    if not cleaned:
        return "tag"
    if cleaned.startswith(SNAPSHOT_ID_PREFIX):
        cleaned = "s-" + cleaned
    return cleaned[:MAX_TAG]
