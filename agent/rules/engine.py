"""The rules engine: (rules, state, fact) -> (state, snapshot requests). Pure: no I/O, no clock reads.

Every fact carries its time (`fact.at`, epoch seconds); a step first lets time pass to `fact.at` (quiet and
schedule triggers, held fires whose `min_interval` ran out) and then applies the fact itself. `Tick` only
lets time pass. The daemon sends a `Tick` at `next_wakeup(rules, state)`.

Triggers (`when`):
    marker   a FileSynced whose basename is the marker name fires; scope = the marker's folder, and
             `{marker}` = the marker file's first line. `glob`, when set, must match the marker's path.
    quiet    fires once no counted file changed for the duration, after at least one change.
    files    fires when that many counted files were synced since the rule last fired.
    bytes    fires when that many bytes of counted files were synced since the rule last fired.
    every    fires on schedule (phase kept from the rule's start) when a counted file changed since the
             rule last fired, or always with `always: true`. Missed fire times while the agent was down
             give one fire, not one per missed time.
    cron     the same on a cron schedule (UTC).
    manual   fires on every ManualRequest, with the request's extra tags added. A ManualRequest always
             asks for a snapshot: with no manual rule it gives a request of its own tags.

A counted file: its path matches the rule's `glob` (gitignore-style: `*.csv` at any depth, `drops/**`,
`drops/*/part-*`; no glob counts everything) and its basename is not the name of any marker rule's marker.
FileChanged, FileSynced and FileDeleted of a counted file are changes (for quiet, every and cron); only
FileSynced adds to the files and bytes counts.

`min_interval`: a rule never fires sooner than that after its last fire. A trigger that comes earlier is
held (pending) and fires exactly once when the interval has passed, with everything that triggered it
meanwhile (folders of every marker, tags for every marker's first line, the manual requests' tags). A held
quiet trigger also waits until the folder is quiet again, so it never fires in the middle of a new drop.

Each fire increments the rule's `seq`; tags are rendered at fire time. All fires of one step are merged
into one SnapshotRequest; the queue coalesces requests further.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from typing import Any, Generic, TypeVar

import pathspec

from agent.api.names import safe_tag
from agent.config import (
    BytesWhen,
    CronWhen,
    EveryWhen,
    FilesWhen,
    ManualWhen,
    MarkerWhen,
    QuietWhen,
    RuleConfig,
)
from agent.facts import Fact, FileChanged, FileDeleted, FileSynced, ManualRequest
from agent.rules.schedule import next_fire
from agent.rules.templates import render_tags

K = TypeVar("K")
V = TypeVar("V")

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Take a snapshot once every file under `scopes` is in the mount, then tag it with `tags` in order.

    A scope is '' (the whole dataset) or a folder prefix such as 'drops/2026-11-25'.
    """

    rules: tuple[str, ...]
    tags: tuple[str, ...]
    scopes: tuple[str, ...]
    requested_at: float

    def merge(self, other: SnapshotRequest) -> SnapshotRequest:
        """One request covering both: unions (order kept) and the later request time."""
        return SnapshotRequest(
            rules=_union(self.rules, other.rules),
            tags=_union(self.tags, other.tags),
            scopes=normalise_scopes(self.scopes + other.scopes),
            requested_at=max(self.requested_at, other.requested_at),
        )


def normalise_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Distinct scopes in order; the whole dataset ('') swallows every folder."""
    out = _union((), tuple(scope.strip("/") for scope in scopes))
    return ("",) if "" in out else out


@dataclass(frozen=True, slots=True)
class RuleState:
    """What one rule remembers between facts."""

    seq: int = 0
    changed: bool = False  # a counted file changed since the rule last fired
    files: int = 0  # counted files synced since the rule last fired
    bytes: int = 0  # their bytes
    last_change_at: float | None = None
    last_fired_at: float | None = None
    next_at: float | None = None  # next scheduled time (every, cron)
    anchor: float | None = None  # start of an `every` schedule: its phase
    trigger: str = ""  # the `when` this state was built for; a changed trigger restarts the schedule
    pending: bool = False  # triggered, held back by min_interval
    pending_scopes: tuple[str, ...] = ()
    pending_markers: tuple[str, ...] = ()
    pending_tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RulesState:
    """Per-rule state by rule name. Treat as immutable; persist with to_json/from_json."""

    rules: Mapping[str, RuleState] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {"version": STATE_VERSION, "rules": {name: asdict(st) for name, st in sorted(self.rules.items())}}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, rules: Sequence[RuleConfig] | None = None, now: float | None = None) -> RulesState:
        """Parse what to_json wrote; raises ValueError when the text is not such a state.

        With `rules` and `now` (after a restart), the state is also fitted to the rules (see `resume`).
        """
        state = cls._parse(text)
        if rules is not None:
            if now is None:
                raise ValueError("from_json needs `now` to fit the state to the rules")
            state = resume(rules, state, now)
        return state

    @classmethod
    def _parse(cls, text: str) -> RulesState:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"rules state is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"rules state is not a version {STATE_VERSION} rules state")
        if not isinstance(data.get("rules"), dict):
            raise ValueError(f"rules state is not a version {STATE_VERSION} rules state")
        names = {f.name for f in fields(RuleState)}
        out: dict[str, RuleState] = {}
        for name, raw in data["rules"].items():
            if not isinstance(raw, dict):
                raise ValueError(f"rules state of {name!r} is not an object")
            values: dict[str, Any] = {key: value for key, value in raw.items() if key in names}
            for key in ("pending_scopes", "pending_markers", "pending_tags"):
                values[key] = tuple(values.get(key) or ())
            try:
                out[str(name)] = RuleState(**values)
            except TypeError as exc:
                raise ValueError(f"rules state of {name!r}: {exc}") from None
        return cls(out)


@dataclass(frozen=True, slots=True)
class _Trigger:
    scopes: tuple[str, ...] = ("",)
    markers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


def initial_state(rules: Sequence[RuleConfig], now: float) -> RulesState:
    """A fresh state: counters at zero, schedules starting at `now`."""
    return RulesState({rule.name: _fresh(rule, now) for rule in rules})


def resume(rules: Sequence[RuleConfig], state: RulesState, now: float) -> RulesState:
    """`state` (loaded after a restart) fitted to `rules`: new rules start fresh, a rule whose trigger
    changed restarts its schedule, `seq` always survives. States of rules no longer configured are kept so
    that their `seq` continues if they come back."""
    states = dict(state.rules)
    for rule in rules:
        states[rule.name] = _fitted(rule, states.get(rule.name), now)
    return RulesState(states)


def with_seq_floors(state: RulesState, floors: Mapping[str, int]) -> RulesState:
    """`state` with each named rule's `seq` raised to at least its floor (the highest `{seq}` the server already
    holds for it, see templates.highest_seq), so the next fire goes on from there."""
    rules = dict(state.rules)
    for name, floor in floors.items():
        current = rules.get(name, RuleState())
        if floor > current.seq:
            rules[name] = replace(current, seq=floor)
    return RulesState(rules)


def step(rules: Sequence[RuleConfig], state: RulesState, fact: Fact) -> tuple[RulesState, tuple[SnapshotRequest, ...]]:
    """Apply one fact. Returns the new state and at most one snapshot request (every fire merged)."""
    if not rules and not isinstance(fact, ManualRequest):
        return state, ()  # nothing to count or fire (the same state: the caller has nothing to save)
    at = fact.at
    markers = _marker_names(rules)
    states = dict(state.rules)
    fired: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []  # (rule, tags, scopes)
    for rule in rules:
        st = _fitted(rule, states.get(rule.name), at)
        st, trig = _on_time(rule, st, at)
        st, fire = _gate(rule, st, trig, at)
        if fire:
            fired.append(fire)
        st, trig = _on_fact(rule, st, fact, markers)
        st, fire = _gate(rule, st, trig, at)
        if fire:
            fired.append(fire)
        states[rule.name] = st
    if isinstance(fact, ManualRequest) and not any(isinstance(rule.when, ManualWhen) for rule in rules):
        fired.append(("", tuple(safe_tag(tag) for tag in fact.tags), ("",)))
    if not fired:
        return RulesState(states), ()
    request = SnapshotRequest(
        rules=_union((), tuple(name for name, _, _ in fired if name)),
        tags=_union((), tuple(tag for _, tags, _ in fired for tag in tags)),
        scopes=normalise_scopes(scope for _, _, scopes in fired for scope in scopes),
        requested_at=at,
    )
    return RulesState(states), (request,)


def next_wakeup(rules: Sequence[RuleConfig], state: RulesState) -> float | None:
    """The earliest time at which a Tick can make a rule fire, or None when only new facts can."""
    times: list[float] = []
    for rule in rules:
        st = state.rules.get(rule.name)
        if st is None:
            continue
        when = rule.when
        if st.pending:
            due = (st.last_fired_at or 0.0) + rule.min_interval
            if isinstance(when, QuietWhen) and st.last_change_at is not None:
                due = max(due, st.last_change_at + when.quiet)
            times.append(due)
        elif isinstance(when, QuietWhen) and st.changed and st.last_change_at is not None:
            times.append(st.last_change_at + when.quiet)
        if isinstance(when, EveryWhen | CronWhen) and st.next_at is not None:
            times.append(st.next_at)
    return min(times) if times else None


# --- one rule -------------------------------------------------------------------------------------------


def _fresh(rule: RuleConfig, now: float, seq: int = 0) -> RuleState:
    st = RuleState(seq=seq, trigger=_fingerprint(rule))
    if isinstance(rule.when, EveryWhen | CronWhen):
        st = replace(st, anchor=now, next_at=next_fire(rule.when, now, anchor=now))
    return st


def _fitted(rule: RuleConfig, st: RuleState | None, now: float) -> RuleState:
    if st is None:
        return _fresh(rule, now)
    if st.trigger != _fingerprint(rule):
        fresh = _fresh(rule, now, st.seq)
        return replace(st, trigger=fresh.trigger, anchor=fresh.anchor, next_at=fresh.next_at)
    return st


def _on_time(rule: RuleConfig, st: RuleState, at: float) -> tuple[RuleState, _Trigger | None]:
    when = rule.when
    if isinstance(when, QuietWhen) and _is_quiet(when, st, at):
        return st, _Trigger()
    if isinstance(when, EveryWhen | CronWhen) and st.next_at is not None and at >= st.next_at:
        st = replace(st, next_at=next_fire(when, at, anchor=st.anchor))
        return st, (_Trigger() if st.changed or when.always else None)
    return st, None


def _on_fact(rule: RuleConfig, st: RuleState, fact: Fact, markers: frozenset[str]) -> tuple[RuleState, _Trigger | None]:
    when = rule.when
    if isinstance(fact, ManualRequest):
        if isinstance(when, ManualWhen):
            return st, _Trigger(tags=tuple(safe_tag(tag) for tag in fact.tags))
        return st, None
    if isinstance(fact, FileSynced) and (fact.adopted or fact.restored):
        return st, None  # found in the mount, or copied again after the mount lost it: no new data, no trigger
    if isinstance(fact, FileSynced) and isinstance(when, MarkerWhen):
        folder, _, name = fact.path.rpartition("/")
        if name == when.marker and _glob_ok(rule.glob, fact.path):
            return st, _Trigger(scopes=(folder,), markers=((fact.first_line or "").strip(),))
        return st, None
    if not isinstance(fact, FileChanged | FileSynced | FileDeleted) or not _counted(rule, fact.path, markers):
        return st, None
    if not isinstance(fact, FileSynced):
        return replace(st, changed=True, last_change_at=fact.at), None
    st = replace(st, changed=True, last_change_at=fact.at, files=st.files + 1, bytes=st.bytes + max(0, fact.size))
    if isinstance(when, FilesWhen) and st.files >= when.files:
        return st, _Trigger()
    if isinstance(when, BytesWhen) and st.bytes >= when.bytes:
        return st, _Trigger()
    return st, None


def _gate(
    rule: RuleConfig, st: RuleState, trig: _Trigger | None, at: float
) -> tuple[RuleState, tuple[str, tuple[str, ...], tuple[str, ...]] | None]:
    """Fire now, hold the trigger for min_interval, or release a held one."""
    if trig is None and not st.pending:
        return st, None
    if trig is not None and trig.scopes == ("",) and rule.glob is not None:
        trig = replace(trig, scopes=(glob_folder(rule.glob),))  # the rule counts only there: it waits only there
    scopes = st.pending_scopes + (trig.scopes if trig else ())
    marks = st.pending_markers + (trig.markers if trig else ())
    extra = st.pending_tags + (trig.tags if trig else ())
    interval_over = st.last_fired_at is None or at >= st.last_fired_at + rule.min_interval
    quiet_ok = not isinstance(rule.when, QuietWhen) or _is_quiet(rule.when, st, at)
    if not (interval_over and quiet_ok):
        held = replace(
            st,
            pending=True,
            pending_scopes=normalise_scopes(scopes),
            pending_markers=_union((), marks),
            pending_tags=_union((), extra),
        )
        return held, None
    seq = st.seq + 1
    tags = render_tags(rule.tags, rule=rule.name, seq=seq, now=at, markers=_union((), marks)) + extra
    done = replace(
        st,
        seq=seq,
        changed=False,
        files=0,
        bytes=0,
        last_fired_at=at,
        pending=False,
        pending_scopes=(),
        pending_markers=(),
        pending_tags=(),
    )
    return done, (rule.name, _union((), tags), normalise_scopes(scopes))


def _is_quiet(when: QuietWhen, st: RuleState, at: float) -> bool:
    return st.changed and st.last_change_at is not None and at >= st.last_change_at + when.quiet


def _counted(rule: RuleConfig, path: str, markers: frozenset[str]) -> bool:
    return path.rpartition("/")[2] not in markers and _glob_ok(rule.glob, path)


def check_glob(glob: str) -> None:
    """Raise ValueError when `glob` is not one usable gitignore-style pattern (for the config layer)."""
    text = glob.strip()
    if not text or text.startswith("#"):
        raise ValueError(f"glob {glob!r} matches nothing: give a pattern such as '*.csv' or 'drops/**'")
    if text.startswith("!"):
        raise ValueError(f"glob {glob!r}: a negated pattern alone matches nothing")
    try:
        pathspec.GitIgnoreSpec.from_lines([glob])
    except ValueError as exc:  # pathspec's GitIgnorePatternError is a ValueError
        raise ValueError(f"glob {glob!r} is not a valid pattern: {exc}") from None


def glob_folder(glob: str) -> str:
    """The folder every path a gitignore-style `glob` matches lies under ('' when it may match anywhere): its
    leading folders up to the first one with a wildcard. A pattern with no '/' but a trailing one matches at
    any depth."""
    text = glob.strip()
    if "/" not in text.rstrip("/"):
        return ""
    parts = text.strip("/").split("/")
    folders: list[str] = []
    for part in parts[:-1]:
        if any(char in part for char in "*?[\\"):
            break
        folders.append(part)
    return "/".join(folders)


def _glob_ok(glob: str | None, path: str) -> bool:
    return glob is None or _matcher(glob)(path)


@lru_cache(maxsize=256)
def _matcher(glob: str) -> Callable[[str], bool]:
    """gitignore semantics (pathspec), so `glob` reads like the `source.ignore` patterns."""
    match: Callable[[str], bool] = pathspec.GitIgnoreSpec.from_lines([glob]).match_file
    return match


class _PerObject(Generic[K, V]):
    """`fn(obj)` remembered by the object's identity, for immutable config objects met on every fact (the
    config's rules, for the agent's life): a step then costs no repr of a pydantic model, no set of names."""

    def __init__(self, fn: Callable[[K], V]) -> None:
        self.fn = fn
        self.seen: dict[int, tuple[K, V]] = {}

    def __call__(self, obj: K) -> V:
        hit = self.seen.get(id(obj))
        if hit is not None and hit[0] is obj:  # the entry holds `obj`: its id cannot have been reused
            return hit[1]
        value = self.fn(obj)
        if len(self.seen) >= 64:
            self.seen.clear()
        self.seen[id(obj)] = (obj, value)
        return value


def _marker_names_of(rules: tuple[RuleConfig, ...]) -> frozenset[str]:
    return frozenset(rule.when.marker for rule in rules if isinstance(rule.when, MarkerWhen))


_marker_names_memo = _PerObject(_marker_names_of)


def _marker_names(rules: Sequence[RuleConfig]) -> frozenset[str]:
    return _marker_names_memo(rules) if isinstance(rules, tuple) else _marker_names_of(tuple(rules))


def _when_of(rule: RuleConfig) -> str:
    return repr(rule.when)


_fingerprint = _PerObject(_when_of)
"""What a rule's trigger is: a state made for another `when` is started afresh (`_fitted`)."""


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(first + second))
