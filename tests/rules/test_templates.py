"""Tag templates: placeholders filled in at fire time, results safe for Domino, bad templates refused."""

from __future__ import annotations

import pytest

from agent.api.names import tag_problem
from agent.config import parse_config
from agent.errors import ConfigError
from agent.rules.templates import check_template, highest_seq, render_tag, render_tags, seq_pattern

# 2026-11-25 13:04:05 UTC
T = 1795611845.0


@pytest.mark.parametrize(
    ("template", "rule", "seq", "now", "marker", "expected"),
    [
        ("{rule}-{seq}", "nightly", 3, T, None, "nightly-3"),
        ("drop-{date}", "r", 1, T, None, "drop-20261125"),
        ("at-{time}", "r", 1, T, None, "at-130405"),
        ("{date}T{time}", "r", 1, 0.0, None, "19700101T000000"),
        ("v{seq:04d}", "r", 7, T, None, "v0007"),
        ("drop-{marker}", "r", 1, T, "batch-42", "drop-batch-42"),
        ("drop-{marker}", "r", 1, T, "  Batch 42 / final  ", "drop-Batch-42-final"),
        ("drop-{marker}", "r", 1, T, None, "drop"),
        ("drop-{marker}", "r", 1, T, "", "drop"),
        ("{marker}", "r", 1, T, None, "tag"),
        ("latest", "r", 9, T, "ignored", "latest"),
        ("{marker}", "r", 1, T, "snapshot-7", "s-snapshot-7"),  # a marker's line must not shadow a snapshot id
        ("a..b/{rule}", "x y", 1, T, None, "a.b-x-y"),
        ("{{literal}}-{seq}", "r", 2, T, None, "literal-2"),
    ],
)
def test_render_tag(template: str, rule: str, seq: int, now: float, marker: str | None, expected: str) -> None:
    """Each placeholder renders as documented (UTC date and time) and the result is a valid tag name."""
    check_template(template)
    tag = render_tag(template, rule=rule, seq=seq, now=now, marker=marker)
    assert tag == expected
    assert tag_problem(tag) is None


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{nope}", "unknown placeholder {nope}"),
        ("{}", "unknown placeholder {}"),
        ("{0}", "unknown placeholder {0}"),
        ("{rule.upper}", "unknown placeholder"),
        ("{rule[0]}", "unknown placeholder"),
        ("{seq!r}", "conversions"),
        ("{rule", "brace"),
        ("a}b", "brace"),
        ("{date:d}", "bad format"),
        ("{seq:{width}}", "nested"),
        ("", "empty"),
        ("   ", "empty"),
        ("snapshot-{seq}", "may not start with 'snapshot-'"),  # it would shadow a snapshot id (not renamed in silence)
    ],
)
def test_check_template_refuses(template: str, fragment: str) -> None:
    """A template with an unknown placeholder or bad syntax is refused with a message saying why."""
    with pytest.raises(ValueError) as info:
        check_template(template)
    assert fragment in str(info.value)


@pytest.mark.parametrize("template", ["latest", "{rule}", "{seq:03d}", "x-{date}-{time}", "{{x}}", "{marker}"])
def test_check_template_accepts(template: str) -> None:
    """Every documented placeholder, format specs and escaped braces pass the check."""
    check_template(template)
    assert render_tag(template, rule="r", seq=1, now=T, marker="m")


@pytest.mark.parametrize(
    ("templates", "markers", "expected"),
    [
        (("drop-{marker}", "latest"), ("b1", "b2"), ("drop-b1", "drop-b2", "latest")),
        (("latest", "latest"), (), ("latest",)),
        (("{rule}-{seq}",), ("a", "b"), ("r-5",)),
        ((), ("b1",), ()),
    ],
)
def test_render_tags(templates: tuple[str, ...], markers: tuple[str, ...], expected: tuple[str, ...]) -> None:
    """Several templates render once per marker, without duplicates, in order; no templates give no tags."""
    assert render_tags(templates, rule="r", seq=5, now=T, markers=markers) == expected


@pytest.mark.parametrize(
    ("rule", "key", "fragment"),
    [
        ({"tags": ["ok", "{nope}"]}, "rules[0].tags", "unknown placeholder {nope}"),
        ({"tags": ["{seq"]}, "rules[0].tags", "brace"),
        ({"glob": "!x"}, "rules[0].glob", "negated"),
    ],
)
def test_config_refuses_bad_templates_and_globs(rule: dict[str, object], key: str, fragment: str) -> None:
    """A rule's bad tag template or glob is a ConfigError at load naming the key and the reason."""
    doc = {
        "source": {"path": "in"},
        "dataset": {"name": "d"},
        "rules": [{"name": "r", "when": {"manual": True}, **rule}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    assert info.value.key == key
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("templates", "rule", "tags", "expected"),
    [
        (["drop-{date}-{seq}", "latest"], "drop", ["drop-20261126-1", "drop-20261126-12", "latest", "drop-x-9"], 12),
        (["{rule}-{seq:04d}"], "my rule", ["my-rule-0007", "other-0009"], 7),
        (["auto {seq}"], "r", ["auto-3", "auto 4"], 3),
        (["{marker}-{time}-{seq}"], "r", ["run-42-101500-5", "other-101500-x"], 5),
        (["latest", "drop-{date}"], "r", ["latest", "drop-20261126"], 0),
        (["drop-{seq}"], "r", [], 0),
    ],
)
def test_highest_seq_reads_back_what_the_templates_rendered(
    templates: list[str], rule: str, tags: list[str], expected: int
) -> None:
    """The largest {seq} a rule's templates could have rendered among the tags; 0 when none or no {seq}."""
    assert highest_seq(templates, rule, tags) == expected


def test_seq_pattern_matches_what_render_tag_makes() -> None:
    """A tag rendered from a template matches that template's pattern, with the seq as its group."""
    for template in ("drop-{date}-{seq}", "{rule}_{seq:03d}", "x {marker} {seq}", "{seq}.{seq}"):
        tag = render_tag(template, rule="nightly job", seq=42, now=1_795_650_000.0, marker="run 7")
        pattern = seq_pattern(template, "nightly job")
        assert pattern is not None
        match = pattern.fullmatch(tag)
        assert match is not None and int(match.group(1)) == 42, (template, tag)
    assert seq_pattern("latest", "r") is None
