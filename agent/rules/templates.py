"""Tag templates: `drop-{date}-{seq}` and friends rendered into safe Domino tag names. Pure.

Placeholders:
    {rule}    the rule's name
    {seq}     the rule's fire counter (1, 2, 3, ...); a format spec works: {seq:04d}
    {date}    YYYYMMDD, UTC, of the fire time
    {time}    HHMMSS, UTC, of the fire time
    {marker}  the first line of the marker file that fired the rule (empty when there is none)

`{{` and `}}` are literal braces (which `safe_tag` then replaces). Anything else in braces is an error that
`check_template` reports when the configuration is loaded, so rendering at fire time never fails.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from agent.api.names import SNAPSHOT_ID_PREFIX, safe_tag

PLACEHOLDERS = ("rule", "seq", "date", "time", "marker")

_FORMATTER = string.Formatter()
_SAMPLE: dict[str, Any] = {"rule": "rule", "seq": 1, "date": "20260101", "time": "000000", "marker": "m"}


def check_template(template: str) -> None:
    """Raise ValueError naming the problem when `template` is not a valid tag template."""
    if not template.strip():
        raise ValueError("a tag template must not be empty")
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"tag template {template!r}: {exc} (write '{{{{' for a literal brace)") from None
    known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            shown = "{" + field + "}" if field else "{}"
            raise ValueError(f"tag template {template!r}: unknown placeholder {shown}; known: {known}")
        if conversion is not None:
            raise ValueError(f"tag template {template!r}: conversions such as !{conversion} are not supported")
        if spec and any(ch in spec for ch in "{}"):
            raise ValueError(f"tag template {template!r}: nested placeholders are not supported")
    try:
        template.format_map(_SAMPLE)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"tag template {template!r}: bad format: {exc}") from None
    literal = parts[0][0] if parts else ""
    if literal.startswith(SNAPSHOT_ID_PREFIX):
        raise ValueError(
            f"tag template {template!r}: a tag may not start with {SNAPSHOT_ID_PREFIX!r} (it would shadow a snapshot"
            " id); try snap-{seq}"
        )


def render_tag(template: str, *, rule: str, seq: int, now: float, marker: str | None) -> str:
    """`template` with its placeholders filled in, made a valid tag name with `safe_tag`.

    `now` is epoch seconds (the fire time); `{date}` and `{time}` are UTC. Assumes `check_template` passed.
    """
    moment = datetime.fromtimestamp(now, tz=UTC)
    values: dict[str, Any] = {
        "rule": rule,
        "seq": seq,
        "date": moment.strftime("%Y%m%d"),
        "time": moment.strftime("%H%M%S"),
        "marker": (marker or "").strip(),
    }
    return safe_tag(template.format_map(values))


def render_tags(
    templates: tuple[str, ...], *, rule: str, seq: int, now: float, markers: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """Every template rendered once per marker (or once with no marker), duplicates dropped, order kept."""
    out: dict[str, None] = {}
    for template in templates:
        for marker in markers or (None,):
            out[render_tag(template, rule=rule, seq=seq, now=now, marker=marker)] = None
    return tuple(out)


_SHAPES = {"seq": r"(\d+)", "date": r"\d{8}", "time": r"\d{6}", "marker": r"[A-Za-z0-9._-]*"}


def seq_pattern(template: str, rule: str) -> re.Pattern[str] | None:
    """What the tags rendered from `template` look like, with `{seq}` as the one group; None without `{seq}`.

    Literal text is matched as `safe_tag` leaves it (other characters become '-'), so `drop-{date}-{seq}` matches
    `drop-20261125-7`. Assumes `check_template` passed."""
    parts = list(_FORMATTER.parse(template))
    if not any(field == "seq" for _, field, _, _ in parts):
        return None
    out: list[str] = []
    seen_seq = False
    for literal, field, _spec, _conversion in parts:
        out.append(re.escape(re.sub(r"[^A-Za-z0-9._-]+", "-", literal)))
        if field == "rule":
            out.append(re.escape(safe_tag(rule)))
        elif field == "seq" and seen_seq:
            out.append(r"\d+")  # one group: a second {seq} repeats the same number
        elif field is not None:
            seen_seq = seen_seq or field == "seq"
            out.append(_SHAPES[field])
    return re.compile("".join(out))


def highest_seq(templates: Iterable[str], rule: str, tags: Iterable[str]) -> int:
    """The largest `{seq}` among `tags` that one of the rule's templates could have rendered (0: none): where a
    rule's counter must continue when its saved state is gone, so it does not take over older snapshots' tags."""
    patterns = [p for p in (seq_pattern(t, rule) for t in templates) if p is not None]
    best = 0
    for tag in tags:
        for pattern in patterns:
            match = pattern.fullmatch(tag)
            if match is not None:
                best = max(best, int(match.group(1)))
    return best
