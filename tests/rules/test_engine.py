"""The rules engine as tables: a list of facts in, the snapshot requests (when, rules, tags, scopes) out."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import RuleConfig
from agent.facts import Fact, FileChanged, FileDeleted, FileSynced, ManualRequest, Tick
from agent.rules.engine import (
    RulesState,
    SnapshotRequest,
    check_glob,
    glob_folder,
    initial_state,
    next_wakeup,
    normalise_scopes,
    resume,
    step,
    with_seq_floors,
)

Out = tuple[float, tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # at, rules, tags, scopes


def rule(name: str, when: dict[str, Any], **extra: Any) -> RuleConfig:
    return RuleConfig.model_validate({"name": name, "when": when, **extra})


def run(
    rules: list[RuleConfig], facts: list[Fact], start: float = 0.0, state: RulesState | None = None
) -> tuple[RulesState, list[Out]]:
    state = initial_state(rules, start) if state is None else state
    out: list[Out] = []
    for fact in facts:
        state, requests = step(rules, state, fact)
        assert len(requests) <= 1
        out += [(r.requested_at, r.rules, r.tags, r.scopes) for r in requests]
    return state, out


def synced(path: str, at: float, size: int = 10, first_line: str | None = None) -> FileSynced:
    return FileSynced(path=path, size=size, at=at, first_line=first_line)


MARKER = rule("m", {"marker": "_SUCCESS"}, tags=["drop-{marker}", "{rule}-{seq}"])
QUIET = rule("q", {"quiet": "10s"}, tags=["quiet-{seq}"])
FILES3 = rule("f", {"files": 3}, tags=["n{seq}"])
BYTES = rule("b", {"bytes": "1KB"}, tags=["b{seq}"])
EVERY = rule("e", {"every": "60s"}, tags=["e{seq}"])
EVERY_ALWAYS = rule("e", {"every": "60s", "always": True}, tags=["e{seq}"])
CRON = rule("c", {"cron": "* * * * *"}, tags=["c{seq}"])
CRON_ALWAYS = rule("c", {"cron": "*/2 * * * *", "always": True})
HELD_QUIET = rule("q", {"quiet": "10s"}, min_interval="60s")
MANUAL = rule("man", {"manual": True}, tags=["manual-{seq}"])

CASES: list[tuple[str, list[RuleConfig], list[Fact], list[Out]]] = [
    # --- marker ---------------------------------------------------------------------------------------
    (
        "marker fires on its synced marker, scoped to its folder, {marker} = first line",
        [MARKER],
        [synced("a/x.csv", 1), synced("a/_SUCCESS", 2, first_line="b7\n")],
        [(2, ("m",), ("drop-b7", "m-1"), ("a",))],
    ),
    (
        "a marker at the top covers the whole dataset",
        [MARKER],
        [synced("_SUCCESS", 1, first_line="x")],
        [(1, ("m",), ("drop-x", "m-1"), ("",))],
    ),
    (
        "a nested marker scopes its own folder; no first line leaves {marker} empty",
        [MARKER],
        [synced("a/b/_SUCCESS", 1)],
        [(1, ("m",), ("drop", "m-1"), ("a/b",))],
    ),
    (
        "a marker seen but not yet synced, a deleted marker, or a near-miss name do not fire",
        [MARKER],
        [
            FileChanged("a/_SUCCESS", 1),
            FileDeleted("a/_SUCCESS", 2),
            synced("a/x_SUCCESS", 3),
            synced("_SUCCESS.txt", 4),
        ],
        [],
    ),
    (
        "glob narrows which markers count",
        [rule("m", {"marker": "_SUCCESS"}, glob="drops/**", tags=["t"])],
        [synced("other/_SUCCESS", 1), synced("drops/d1/_SUCCESS", 2)],
        [(2, ("m",), ("t",), ("drops/d1",))],
    ),
    (
        "each marker fires again with the next seq",
        [MARKER],
        [synced("a/_SUCCESS", 1, first_line="1"), synced("b/_SUCCESS", 2, first_line="2")],
        [(1, ("m",), ("drop-1", "m-1"), ("a",)), (2, ("m",), ("drop-2", "m-2"), ("b",))],
    ),
    # --- quiet ----------------------------------------------------------------------------------------
    (
        "quiet fires at last change + duration, not before",
        [QUIET],
        [FileChanged("a", 1), Tick(10.9), Tick(11)],
        [(11, ("q",), ("quiet-1",), ("",))],
    ),
    (
        "each change restarts the quiet period; synced and deleted files are changes too",
        [QUIET],
        [FileChanged("a", 1), synced("a", 5), Tick(14), FileDeleted("b", 14), Tick(23.9), Tick(24)],
        [(24, ("q",), ("quiet-1",), ("",))],
    ),
    ("quiet needs at least one change", [QUIET], [Tick(100), Tick(1000)], []),
    (
        "after firing, quiet waits for a new change",
        [QUIET],
        [FileChanged("a", 0), Tick(10), Tick(100), FileChanged("b", 200), Tick(210)],
        [(10, ("q",), ("quiet-1",), ("",)), (210, ("q",), ("quiet-2",), ("",))],
    ),
    (
        "quiet only counts files its glob matches",
        [rule("q", {"quiet": "10s"}, glob="*.csv")],
        [FileChanged("notes.txt", 0), Tick(50), FileChanged("deep/x.csv", 60), Tick(70)],
        [(70, ("q",), (), ("",))],
    ),
    (
        "a due quiet rule fires on any later fact, before that fact counts as a new change",
        [QUIET],
        [FileChanged("a", 1), FileChanged("b", 20), Tick(29), Tick(30)],
        [(20, ("q",), ("quiet-1",), ("",)), (30, ("q",), ("quiet-2",), ("",))],
    ),
    # --- files and bytes ------------------------------------------------------------------------------
    (
        "files fires on the Nth synced file and counts again from zero",
        [FILES3],
        [synced(f"f{i}", i) for i in range(1, 8)],
        [(3, ("f",), ("n1",), ("",)), (6, ("f",), ("n2",), ("",))],
    ),
    (
        "files counts only synced files its glob matches",
        [rule("f", {"files": 2}, glob="data/**/*.csv")],
        [
            FileChanged("data/a.csv", 1),
            synced("data/a.txt", 2),
            synced("other/b.csv", 3),
            synced("data/x/a.csv", 4),
            synced("data/b.csv", 5),
        ],
        [(5, ("f",), (), ("data",))],  # it waits for what is under its glob's folder only
    ),
    (
        "marker files never count toward files",
        [rule("f", {"files": 2}, tags=["f"]), rule("m", {"marker": "_SUCCESS"}, tags=["m"])],
        [synced("d/a", 1), synced("d/_SUCCESS", 2), synced("d/b", 3)],
        [(2, ("m",), ("m",), ("d",)), (3, ("f",), ("f",), ("",))],
    ),
    (
        "bytes fires when the synced bytes reach the size, then counts again",
        [BYTES],
        [synced("a", 1, 600), synced("b", 2, 300), synced("c", 3, 100), synced("d", 4, 999), synced("e", 5, 5000)],
        [(3, ("b",), ("b1",), ("",)), (5, ("b",), ("b2",), ("",))],
    ),
    # --- every and cron -------------------------------------------------------------------------------
    (
        "every fires on schedule only after a change",
        [EVERY],
        [Tick(30), FileChanged("a", 40), Tick(59.9), Tick(60), Tick(120), Tick(180)],
        [(60, ("e",), ("e1",), ("",))],
    ),
    (
        "every with always fires on each schedule time",
        [EVERY_ALWAYS],
        [Tick(60), Tick(90), Tick(120)],
        [(60, ("e",), ("e1",), ("",)), (120, ("e",), ("e2",), ("",))],
    ),
    (
        "missed schedule times (agent asleep) give one fire, then the phase continues",
        [EVERY_ALWAYS],
        [Tick(1000), Tick(1019), Tick(1020)],
        [(1000, ("e",), ("e1",), ("",)), (1020, ("e",), ("e2",), ("",))],
    ),
    (
        "a change to a file outside the glob does not make every fire",
        [rule("e", {"every": "60s"}, glob="*.csv")],
        [FileChanged("a.txt", 1), Tick(60), synced("a.csv", 61), Tick(119), Tick(120)],
        [(120, ("e",), (), ("",))],
    ),
    (
        "cron fires at matching minutes after a change",
        [CRON],
        [FileChanged("a", 5), Tick(59), Tick(60), Tick(120), synced("b", 121), Tick(180)],
        [(60, ("c",), ("c1",), ("",)), (180, ("c",), ("c2",), ("",))],
    ),
    (
        "cron with always fires without changes",
        [CRON_ALWAYS],
        [Tick(60), Tick(120), Tick(180), Tick(240)],
        [(120, ("c",), (), ("",)), (240, ("c",), (), ("",))],
    ),
    # --- manual ---------------------------------------------------------------------------------------
    (
        "a manual rule fires on a request, with the request's tags added (made safe)",
        [MANUAL],
        [ManualRequest(5, tags=("extra", "my tag"))],
        [(5, ("man",), ("manual-1", "extra", "my-tag"), ("",))],
    ),
    (
        "without a manual rule a request still asks for a snapshot with its own tags",
        [MARKER, FILES3],
        [ManualRequest(5, tags=("v1.0",)), ManualRequest(6)],
        [(5, (), ("v1.0",), ("",)), (6, (), (), ("",))],
    ),
    # --- min_interval ---------------------------------------------------------------------------------
    (
        "min_interval holds later triggers and fires them once, exactly when the interval ends",
        [rule("f", {"files": 1}, min_interval="60s", tags=["{seq}"])],
        [synced("a", 0), synced("b", 10), synced("c", 20), Tick(59.9), Tick(60), Tick(61), Tick(500)],
        [(0, ("f",), ("1",), ("",)), (60, ("f",), ("2",), ("",))],
    ),
    (
        "held markers keep every folder and every marker's tags",
        [rule("m", {"marker": "_SUCCESS"}, min_interval="1m", tags=["drop-{marker}", "s{seq}"])],
        [
            synced("a/_SUCCESS", 0, first_line="b1"),
            synced("x/_SUCCESS", 10, first_line="b2"),
            synced("y/_SUCCESS", 20, first_line="b3"),
            Tick(60),
        ],
        [(0, ("m",), ("drop-b1", "s1"), ("a",)), (60, ("m",), ("drop-b2", "drop-b3", "s2"), ("x", "y"))],
    ),
    (
        "a held trigger is released by any fact once its interval is over",
        [rule("f", {"files": 1}, min_interval="60s", tags=["{seq}"])],
        [synced("a", 0), synced("b", 10), FileChanged("c", 75)],
        [(0, ("f",), ("1",), ("",)), (75, ("f",), ("2",), ("",))],
    ),
    (
        "a trigger at exactly the end of the interval fires at once",
        [rule("f", {"files": 1}, min_interval="60s")],
        [synced("a", 0), synced("b", 60)],
        [(0, ("f",), (), ("",)), (60, ("f",), (), ("",))],
    ),
    (
        "a held quiet trigger also waits for the folder to be quiet again",
        [rule("q", {"quiet": "10s"}, min_interval="60s")],
        [FileChanged("a", 0), Tick(10), FileChanged("b", 15), Tick(25), FileChanged("c", 65), Tick(70), Tick(75)],
        [(10, ("q",), (), ("",)), (75, ("q",), (), ("",))],
    ),
    (
        "held schedule times fire once at the end of the interval",
        [rule("e", {"every": "10s", "always": True}, min_interval="25s", tags=["{seq}"])],
        [Tick(10), Tick(20), Tick(30), Tick(35), Tick(40), Tick(50), Tick(60)],
        [(10, ("e",), ("1",), ("",)), (35, ("e",), ("2",), ("",)), (60, ("e",), ("3",), ("",))],
    ),
    (
        "a held manual request keeps its tags until the interval ends",
        [rule("man", {"manual": True}, min_interval="60s")],
        [ManualRequest(0, ("a",)), ManualRequest(5, ("b",)), ManualRequest(6, ("c",)), Tick(60)],
        [(0, ("man",), ("a",), ("",)), (60, ("man",), ("b", "c"), ("",))],
    ),
    # --- several rules --------------------------------------------------------------------------------
    (
        "rules firing on one fact give one request: rules, tags and scopes merged",
        [
            rule("m", {"marker": "_SUCCESS"}, tags=["drop-{marker}", "latest"]),
            rule("f", {"files": 2}, tags=["latest", "f{seq}"]),
            rule("q", {"quiet": "5s"}),
        ],
        [synced("d/a", 0), synced("d/_SUCCESS", 1, first_line="z"), synced("d/b", 10)],
        [(1, ("m",), ("drop-z", "latest"), ("d",)), (10, ("f", "q"), ("latest", "f1"), ("",))],
    ),
]


@pytest.mark.parametrize(("rules", "facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rules_table(rules: list[RuleConfig], facts: list[Fact], expected: list[Out]) -> None:
    """Each row's facts give exactly the row's snapshot requests (see the row's id for the behaviour)."""
    _, out = run(rules, facts)
    assert out == expected


@pytest.mark.parametrize(
    ("rules", "facts", "expected"),
    [
        ([MARKER], [synced("a/x", 1)], None),
        ([QUIET], [], None),
        ([QUIET], [FileChanged("a", 3)], 13.0),
        ([QUIET], [FileChanged("a", 3), Tick(13)], None),
        ([EVERY], [], 60.0),
        ([EVERY], [Tick(61)], 120.0),
        ([CRON], [Tick(61)], 120.0),
        ([QUIET, EVERY], [FileChanged("a", 55)], 60.0),
        ([rule("f", {"files": 1}, min_interval="60s")], [synced("a", 5), synced("b", 6)], 65.0),
        (
            [rule("q", {"quiet": "10s"}, min_interval="60s")],
            [FileChanged("a", 0), Tick(10), FileChanged("b", 65)],
            75.0,
        ),
        (
            [rule("q", {"quiet": "10s"}, min_interval="60s")],
            [FileChanged("a", 0), Tick(10), FileChanged("b", 15)],
            25.0,
        ),
    ],
)
def test_next_wakeup(rules: list[RuleConfig], facts: list[Fact], expected: float | None) -> None:
    """next_wakeup is the earliest time a Tick can make a rule fire, None when only facts can."""
    state, _ = run(rules, facts)
    assert next_wakeup(rules, state) == expected


def test_a_tick_at_next_wakeup_fires_a_held_quiet_rule() -> None:
    """Ticking at next_wakeup (quiet first, then the interval) fires a held quiet rule when its interval ends."""
    rules = [rule("q", {"quiet": "10s"}, min_interval="60s")]
    state, out = run(rules, [FileChanged("a", 0), Tick(10), FileChanged("b", 15)])
    assert len(out) == 1
    fired = []
    for _ in range(3):
        at = next_wakeup(rules, state)
        assert at is not None
        state, requests = step(rules, state, Tick(at))
        fired += list(requests)
        if requests:
            break
    assert [r.requested_at for r in fired] == [70.0]


def test_seq_survives_json_round_trip() -> None:
    """The state written by to_json and read by from_json continues the seq (and a held trigger)."""
    rules = [rule("m", {"marker": "_SUCCESS"}, min_interval="60s", tags=["{rule}-{seq}-{marker}"])]
    state, out = run(rules, [synced("a/_SUCCESS", 0, first_line="one"), synced("b/_SUCCESS", 1, first_line="two")])
    assert [o[2] for o in out] == [("m-1-one",)]
    text = state.to_json()
    restored = RulesState.from_json(text)
    assert restored == state
    _, out = run(rules, [Tick(60), synced("c/_SUCCESS", 200, first_line="three")], state=restored)
    assert [(o[0], o[2], o[3]) for o in out] == [(60, ("m-2-two",), ("b",)), (200, ("m-3-three",), ("c",))]


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"version": 99, "rules": {}}', '{"version": 1}', '{"version": 1, "rules": {"a": 3}}']
)
def test_from_json_refuses_other_text(text: str) -> None:
    """Text that is not a rules state raises ValueError instead of giving a wrong state."""
    with pytest.raises(ValueError, match="rules state"):
        RulesState.from_json(text)


def test_resume_keeps_seq_and_restarts_a_changed_schedule() -> None:
    """After a restart with edited rules, seq continues, a changed trigger restarts its schedule, a new rule
    starts fresh, and a removed rule's state is kept."""
    old = [rule("e", {"every": "60s", "always": True}, tags=["{seq}"]), rule("gone", {"files": 1})]
    state, out = run(old, [Tick(60), Tick(120), synced("x", 121)])
    assert [o[2] for o in out if o[1] == ("e",)] == [("1",), ("2",)]
    new = [rule("e", {"every": "1000s", "always": True}, tags=["{seq}"]), rule("fresh", {"quiet": "1s"})]
    assert RulesState.from_json(state.to_json(), new, 500.0) == resume(new, state, 500.0)
    state = resume(new, state, 500.0)
    assert state.rules["e"].seq == 2
    assert state.rules["e"].next_at == 1500.0
    assert state.rules["fresh"].seq == 0
    assert state.rules["gone"].seq == 1
    _, out = run(new, [Tick(1499), Tick(1500)], state=state)
    assert out == [(1500, ("e",), ("3",), ("",))]


def test_step_accepts_a_rule_missing_from_the_state() -> None:
    """A rule added without resume() starts fresh at the fact's time instead of failing."""
    rules = [rule("f", {"files": 1}, tags=["{seq}"])]
    _, out = run(rules, [synced("a", 1)], state=RulesState())
    assert out == [(1, ("f",), ("1",), ("",))]


def test_step_is_pure() -> None:
    """The same state and fact always give the same result, and the input state is left unchanged."""
    rules = [MARKER, QUIET, FILES3]
    state, _ = run(rules, [synced("a/x", 1), synced("a/y", 2)])
    before = state.to_json()
    fact = synced("a/_SUCCESS", 3, first_line="k")
    assert step(rules, state, fact) == step(rules, state, fact)
    assert state.to_json() == before


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [(("a", "b", "a"), ("a", "b")), (("a", "", "b"), ("",)), (("/a/",), ("a",)), ((), ())],
)
def test_normalise_scopes(scopes: tuple[str, ...], expected: tuple[str, ...]) -> None:
    """Scopes are distinct folder prefixes; the whole dataset swallows the rest."""
    assert normalise_scopes(scopes) == expected


def test_merge_requests() -> None:
    """Merging requests unions rules, tags and scopes in order and keeps the later request time."""
    a = SnapshotRequest(rules=("m",), tags=("x", "latest"), scopes=("d1",), requested_at=5)
    b = SnapshotRequest(rules=("m", "f"), tags=("latest", "y"), scopes=("d2",), requested_at=3)
    assert a.merge(b) == SnapshotRequest(("m", "f"), ("x", "latest", "y"), ("d1", "d2"), 5)


@pytest.mark.parametrize(
    ("glob", "problem"),
    [
        ("*.csv", None),
        ("drops/**", None),
        ("data/*/part-*", None),
        ("", "matches nothing"),
        ("   ", "matches nothing"),
        ("# comment", "matches nothing"),
        ("!x", "negated"),
        ("!", "negated"),
        ("\\", "not a valid pattern"),
    ],
)
def test_check_glob(glob: str, problem: str | None) -> None:
    """Usable globs pass; empty, comment, negated and invalid patterns are refused with the reason."""
    if problem is None:
        check_glob(glob)
    else:
        with pytest.raises(ValueError, match=problem):
            check_glob(glob)


@pytest.mark.parametrize("how", ["adopted", "restored"])
def test_adopted_or_restored_files_fire_no_marker_and_count_for_nothing(how: str) -> None:
    """Files found already in the mount (adopted, nothing written) or copied again unchanged after the mount lost
    them (restored) are no new data: no marker fires, no counter moves, and a quiet rule has seen no change."""
    flag = {how: True}
    adopted = [
        FileSynced(path="d/a", size=500, at=1.0, **flag),
        FileSynced(path="d/_SUCCESS", size=0, at=1.0, first_line="x", **flag),
        FileSynced(path="d/b", size=700, at=1.0, **flag),
        FileSynced(path="d/c", size=700, at=1.0, **flag),
    ]
    state, out = run([MARKER, FILES3, BYTES, QUIET], [*adopted, Tick(100.0)])
    assert out == []
    assert state.rules["f"].files == 0 and state.rules["b"].bytes == 0 and not state.rules["q"].changed


def test_seq_floors_raise_the_counter_and_never_lower_it() -> None:
    """with_seq_floors lifts each named rule's seq to its floor; a higher saved seq stays; the next fire goes on."""
    state = initial_state([MARKER, FILES3], 0.0)
    state = with_seq_floors(state, {"m": 7, "f": 0})
    assert state.rules["m"].seq == 7 and state.rules["f"].seq == 0
    assert with_seq_floors(state, {"m": 3}).rules["m"].seq == 7
    _, out = run([MARKER], [synced("d/_SUCCESS", 1.0, first_line="x")], state=state)
    assert out[0][2] == ("drop-x", "m-8")


@pytest.mark.parametrize(
    ("glob", "folder"),
    [
        ("counted/**", "counted"),
        ("/counted/**", "counted"),
        ("drops/2026/*.csv", "drops/2026"),
        ("a/*/b.csv", "a"),
        ("a/b[0-9]/c", "a"),
        ("*.csv", ""),
        ("**/*.csv", ""),
        ("counted/", ""),  # no '/' but a trailing one: a folder named so at any depth
    ],
)
def test_glob_folder_is_the_folder_every_match_lies_under(glob: str, folder: str) -> None:
    """The leading folders of an anchored pattern, up to the first wildcard; '' for a pattern matching anywhere."""
    assert glob_folder(glob) == folder


def test_a_rule_with_a_glob_waits_only_for_the_files_it_counts() -> None:
    """A count rule limited to `counted/**` asks for a snapshot of what is under `counted` (a file that never
    settles elsewhere does not hold it); without a glob, or for a marker, the scope is as before."""
    counted = rule("c", {"files": 2}, glob="counted/**", tags=["c{seq}"])
    _, out = run([counted], [synced("counted/a", 1.0), synced("elsewhere/x", 1.5), synced("counted/b", 2.0)])
    assert [scopes for *_, scopes in out] == [("counted",)]
    _, plain = run([FILES3], [synced("a", 1.0), synced("b/c", 1.0), synced("d", 2.0)])
    assert [scopes for *_, scopes in plain] == [("",)]
    globbed_marker = rule("m", {"marker": "_SUCCESS"}, glob="out/**", tags=["m{seq}"])
    _, marked = run([globbed_marker], [synced("out/run1/_SUCCESS", 1.0, first_line="x")])
    assert [scopes for *_, scopes in marked] == [("out/run1",)]
