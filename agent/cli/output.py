"""How the API commands print results: JSON on stdout for programs, an aligned plain-text table for people.

JSON is the value objects of `agent.api.models` as objects with their field names (snake_case), lists as
arrays. Tables pick a few columns per kind of object; a single object prints as `field  value` lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import click

from agent.api.models import Dataset, Grant, Snapshot
from agent.errors import OutputError

OutputFormat = Literal["json", "table"]
OUTPUT_CHOICES = ("json", "table")

COLUMNS: Mapping[type, tuple[str, ...]] = {
    Dataset: ("id", "name", "project_id", "size_bytes", "created_at", "tags"),
    Snapshot: ("id", "dataset_id", "status", "tags", "created_at"),
    Grant: ("principal_id", "principal_type", "role", "principal_name"),
}


def jsonable(value: Any) -> Any:
    """Plain JSON data for a value object, a list of them, or a mapping."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def render(value: Any, fmt: OutputFormat) -> str:
    """`value` as the text the command prints (no trailing newline)."""
    if fmt == "json":
        return json.dumps(jsonable(value), indent=2, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return table(value)
    return fields_table(jsonable(value))


def emit(value: Any, fmt: OutputFormat) -> None:
    say(render(value, fmt))


def say(text: str) -> None:
    """Write a line of a command's output to stdout (see `writing`)."""
    with writing():
        click.echo(text)


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Around writes to stdout: one that fails (a full disk, a pipe closed by its reader) is one error line and
    exit 1 (OutputError), not an internal error. Flushes, so that the failure comes here."""
    try:
        yield
        if sys.stdout is not None:  # None: started with stdout closed, where the output goes nowhere, as asked
            sys.stdout.flush()
    except OSError as exc:
        raise OutputError(f"cannot write the output to stdout ({exc.strerror or exc.__class__.__name__})") from None
    except ValueError:  # a file object closed under us
        raise OutputError("cannot write the output to stdout (closed)") from None


def table(rows: Sequence[Any]) -> str:
    """An aligned table of value objects (or mappings), one per line, with a header."""
    if not rows:
        return "(none)"
    first = rows[0]
    columns = COLUMNS.get(type(first)) or tuple(jsonable(first))
    data = [jsonable(row) for row in rows]
    cells = [[_cell(row.get(column)) for column in columns] for row in data]
    header = [column.upper() for column in columns]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(columns))]
    return "\n".join(_aligned(line, widths) for line in [header, *cells])


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(text.ljust(width) for text, width in zip(cells, widths, strict=True)).rstrip()


def fields_table(data: Any) -> str:
    """One object as `field  value` lines."""
    if not isinstance(data, Mapping):
        return _cell(data)
    width = max((len(str(key)) for key in data), default=0)
    return "\n".join(f"{str(key).ljust(width)}  {_cell(value)}".rstrip() for key, value in data.items())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={item}" for key, item in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)
