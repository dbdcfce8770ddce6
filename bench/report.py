"""Table rows and the report: a markdown table (benchmark, domino-sync, rsync, cp, ratio, target, met?),
notes per row, the machine, and profile summaries; also JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

DASH = "—"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table. Cells are already formatted; `values` keeps the raw numbers for JSON."""

    benchmark: str
    domino: str = DASH
    rsync: str = DASH
    cp: str = DASH
    ratio: str = DASH
    target: str = DASH
    met: bool | None = None  # None: no target, or nothing to judge (an error)
    note: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """A figure could not be measured."""
        return "error" in (self.domino, self.rsync, self.cp)

    @property
    def verdict(self) -> str:
        if self.met is None:
            return DASH
        return "yes" if self.met else "**no**"


def error_row(benchmark: str, message: str, target: str = DASH) -> Row:
    return Row(benchmark=benchmark, domino="error", target=target, note=message, values={"error": message})


def seconds(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 100:
        return f"{value:.2f} s"
    return f"{value:.0f} s"


def times(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}x"


def mib(value: float | None) -> str:
    return DASH if value is None else f"{value / 2**20:.1f} MiB"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: Sequence[Row], machine: Mapping[str, str], profiles: Sequence[tuple[str, str]]) -> str:
    """The whole report as markdown."""
    lines = [
        "| benchmark | domino-sync | rsync | cp | ratio | target | met? |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        cells = (row.benchmark, row.domino, row.rsync, row.cp, row.ratio, row.target, row.verdict)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    notes = [f"- **{row.benchmark}**: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", *notes]
    lines += ["", "Machine:", ""]
    lines += [f"- {name}: {value}" for name, value in machine.items()]
    for title, summary in profiles:
        lines += ["", f"### Profile: {title}", "", summary]
    return "\n".join(lines) + "\n"


def as_json(rows: Sequence[Row], machine: Mapping[str, str], options: Mapping[str, Any]) -> str:
    return json.dumps(
        {"machine": dict(machine), "options": dict(options), "rows": [asdict(row) for row in rows]},
        indent=2,
        default=str,
    )


def comparison_row(
    benchmark: str,
    samples: Mapping[str, Sequence[float]],
    errors: Mapping[str, str],
    *,
    max_ratio: float | None,
    extra_note: str = "",
) -> Row:
    """A row of median seconds per tool ("domino-sync", "rsync", "cp"), the domino-sync/rsync ratio, and the
    target `max_ratio` (None: no target). Tools that failed show "error" and their message goes to the note."""
    from bench.measure import median, ratio, spread

    med = {tool: median(values) for tool, values in samples.items() if values}
    cells = {tool: seconds(med[tool]) if tool in med else ("error" if tool in errors else DASH) for tool in samples}
    r = ratio(med.get("domino-sync"), med.get("rsync"))
    r_cp = ratio(med.get("domino-sync"), med.get("cp"))
    notes = []
    rounds = {tool: len(values) for tool, values in samples.items() if values}
    if rounds:
        counts = sorted(set(rounds.values()))
        notes.append(f"median of {'/'.join(map(str, counts))} rounds")
        notes.append(
            "spread (max-min)/median "
            + ", ".join(f"{tool} {spread(values):.0%}" for tool, values in samples.items() if values)
        )
    if r_cp is not None:
        notes.append(f"domino-sync/cp {r_cp:.2f}x")
    if extra_note:
        notes.append(extra_note)
    notes += [f"{tool} failed: {message}" for tool, message in errors.items()]
    return Row(
        benchmark=benchmark,
        domino=cells.get("domino-sync", DASH),
        rsync=cells.get("rsync", DASH),
        cp=cells.get("cp", DASH),
        ratio=f"{r:.2f}x rsync" if r is not None else DASH,
        target=f"≤ {max_ratio:g}x rsync" if max_ratio is not None else DASH,
        met=None if r is None or max_ratio is None else r <= max_ratio,
        note="; ".join(notes),
        values={"median_seconds": med, "samples": {k: list(v) for k, v in samples.items()}, "errors": dict(errors)},
    )
