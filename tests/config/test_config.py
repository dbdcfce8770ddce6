"""Config validation: every bad value gives one ConfigError naming the key, the value and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config, parse_config
from agent.errors import ConfigError

BASE: dict[str, Any] = {"source": {"path": "in"}, "dataset": {"name": "d"}}


def with_(**patch: Any) -> dict[str, Any]:
    doc = {key: dict(value) for key, value in BASE.items()}
    for dotted, value in patch.items():
        section, _, key = dotted.partition("__")
        doc.setdefault(section, {})
        if key:
            doc[section][key] = value
        else:
            doc[section] = value
    return doc


def test_defaults_fill_a_minimal_config() -> None:
    """A config with only source.path and dataset.name gets the documented defaults."""
    cfg = parse_config(BASE, env={})
    assert cfg.source.settle == 2.0
    assert cfg.source.rescan == 600.0
    assert cfg.source.delete == "mirror"
    assert cfg.source.max_delete == 0.5
    assert "*.part" in cfg.source.ignore
    assert cfg.shutdown_timeout == 20.0
    assert cfg.server.listen == "127.0.0.1:9464"
    assert cfg.domino.url is None


def test_environment_fills_domino_settings_the_file_leaves_out() -> None:
    """DOMINO_API_HOST and DOMINO_USER_API_KEY fill domino.url and domino.api_key; the file wins over them."""
    cfg = parse_config(BASE, env={"DOMINO_API_HOST": "https://d.example", "DOMINO_USER_API_KEY": "k-123"})
    assert cfg.domino.url == "https://d.example"
    assert cfg.domino.api_key == "k-123"
    cfg = parse_config(with_(domino={"url": "embedded"}), env={"DOMINO_API_HOST": "https://d.example"})
    assert cfg.domino.url == "embedded"


@pytest.mark.parametrize(
    ("doc", "key", "shown"),
    [
        (with_(source__setle="2s"), "source.setle", "no such key"),
        (with_(source__settle="2 parsecs"), "source.settle", "duration"),
        (with_(source__settle=True), "source.settle", "duration"),
        (with_(source={}), "source.path", "required"),
        (with_(source__delete="sometimes"), "source.delete", "mirror"),
        (with_(source__max_delete="150%"), "source.max_delete", "50%"),
        (with_(source__rescan="-1s"), "source.rescan", "duration"),
        (with_(dataset={}), "dataset", "dataset.id"),
        (with_(dataset__grants=[{"principal": "bob", "role": "god"}]), "dataset.grants[0].role", "read"),
        (with_(domino__url="ftp://x"), "domino.url", "http"),
        (with_(domino__burst=0), "domino.burst", "greater than or equal"),
        (with_(domino__requests_per_second="fast"), "domino.requests_per_second", "number"),
        (with_(server__listen="9464"), "server.listen", "HOST:PORT"),
        (with_(shutdown_timeout="soon"), "shutdown_timeout", "duration"),
        (with_(rules=[{"name": "a", "when": {"cron": "bad"}}]), "rules[0].when.cron", "cron"),
        (with_(rules=[{"name": "a", "when": {"foo": 1}}]), "rules[0].when", "one trigger"),
        (with_(rules=[{"name": "a", "when": {"quiet": "1s", "files": 3}}]), "rules[0].when", "one trigger"),
        (with_(rules=[{"name": "a", "when": {"bytes": "lots"}}]), "rules[0].when.bytes", "size"),
        (with_(rules=[{"name": "a", "when": {"marker": "a/b"}}]), "rules[0].when.marker", "without '/'"),
        (with_(rules=[{"name": "a b", "when": {"files": 1}}]), "rules[0].name", "pattern"),
        (with_(rules=[{"name": "a", "when": {"files": 0}}]), "rules[0].when.files", "greater than"),
        (with_(rules=[{"name": "a", "when": {"files": 1}, "tagz": []}]), "rules[0].tagz", "no such key"),
        (with_(log={"level": "loud"}), "log.level", "debug"),
    ],
)
def test_bad_values_name_the_key(doc: dict[str, Any], key: str, shown: str) -> None:
    """Each invalid config raises one ConfigError whose message names the key and what was expected."""
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    assert info.value.key == key
    message = str(info.value)
    assert message.startswith(f"config: {key}: got ")
    assert shown in message
    assert "\n" not in message


def test_a_bad_api_key_value_is_never_shown() -> None:
    """An invalid domino.api_key is reported without echoing the value."""
    with pytest.raises(ConfigError) as info:
        parse_config(with_(domino__api_key=["secret-value-123"]), env={})
    assert "secret-value-123" not in str(info.value)


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    """A missing file and a YAML syntax error are ConfigErrors too, naming --config."""
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_config(bad)
