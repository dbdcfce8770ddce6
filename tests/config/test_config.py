"""Config validation: every bad value gives one ConfigError naming the key, the value and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import check_mount_overlap, load_config, overlap_problem, parse_config
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
    assert cfg.dataset.durability == "snapshot"
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
        (with_(dataset__durability="always"), "dataset.durability", "snapshot"),
        (with_(source__max_delete="150%"), "source.max_delete", "50%"),
        (with_(source__rescan="-1s"), "source.rescan", "duration"),
        (with_(dataset={}), "dataset", "dataset.id"),
        (with_(dataset__grants=[{"principal": "bob", "role": "god"}]), "dataset.grants[0].role", "read"),
        (with_(domino__url="ftp://x"), "domino.url", "http"),
        (with_(domino__burst=0), "domino.burst", "a number >= 1"),
        (with_(domino__requests_per_second="fast"), "domino.requests_per_second", "number"),
        (with_(server__listen="9464"), "server.listen", "HOST:PORT"),
        (with_(shutdown_timeout="soon"), "shutdown_timeout", "duration"),
        (with_(rules=[{"name": "a", "when": {"cron": "bad"}}]), "rules[0].when.cron", "cron"),
        (with_(rules=[{"name": "a", "when": {"foo": 1}}]), "rules[0].when", "one trigger"),
        (with_(rules=[{"name": "a", "when": {"quiet": "1s", "files": 3}}]), "rules[0].when", "one trigger"),
        (with_(rules=[{"name": "a", "when": {"bytes": "lots"}}]), "rules[0].when.bytes", "size"),
        (with_(rules=[{"name": "a", "when": {"marker": "a/b"}}]), "rules[0].when.marker", "without '/'"),
        (with_(rules=[{"name": "a", "when": {"marker": "*.done"}}]), "rules[0].when.marker", "not a pattern"),
        (with_(rules=[{"name": "a b", "when": {"files": 1}}]), "rules[0].name", "letters, digits"),
        (with_(rules=[{"name": "a", "when": {"files": 0}}]), "rules[0].when.files", "a number >= 1"),
        (with_(rules=[{"name": "a", "whn": {"files": 1}}]), "rules[0].whn", "did you mean when?"),
        (with_(source__copy_workers="many"), "source.copy_workers", "a whole number"),
        (with_(source__create="maybe"), "source.create", "true or false"),
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
    assert message.startswith(f"config: {key}: ")
    assert shown in message
    assert "\n" not in message
    assert "Input should" not in message  # pydantic's words are put in this module's


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


def _paths(tmp_path: Path, source: Path, mount: Path, state: Path | None = None) -> dict[str, Any]:
    doc = with_(source__path=str(source), dataset__mount=str(mount), domino__url="https://domino.example")
    doc["state_dir"] = str(state or tmp_path / "state")
    return doc


@pytest.mark.parametrize(
    ("mount", "shown"),
    [
        ("src", "it is source.path itself"),
        ("src/sub", "it is inside source.path"),
        (".", "it holds source.path"),
    ],
)
def test_a_mount_overlapping_the_source_is_a_config_error(tmp_path: Path, mount: str, shown: str) -> None:
    """dataset.mount equal to, inside, or holding source.path is one ConfigError naming dataset.mount."""
    (tmp_path / "src").mkdir()
    with pytest.raises(ConfigError) as info:
        parse_config(_paths(tmp_path, tmp_path / "src", tmp_path / mount, tmp_path / "elsewhere" / "state"), env={})
    assert info.value.key == "dataset.mount"
    message = str(info.value)
    assert message.startswith("config: dataset.mount: got ")
    assert shown in message
    assert str((tmp_path / "src").resolve()) in message
    assert "\n" not in message


def test_overlap_is_found_through_symlinks_and_paths_not_yet_created(tmp_path: Path) -> None:
    """A mount reached through a symlink to the source, or not yet created under it, still overlaps."""
    source = tmp_path / "src"
    source.mkdir()
    (tmp_path / "link").symlink_to(source)
    assert overlap_problem(source, tmp_path / "link") == f"it is source.path itself, {source.resolve()}"
    assert overlap_problem(tmp_path / "link", source / "not" / "yet") is not None
    assert overlap_problem(source, tmp_path / "link" / "new" / "..") is not None
    with pytest.raises(ConfigError, match=r"dataset\.mount"):
        parse_config(_paths(tmp_path, tmp_path / "link", source / "new"), env={})


def test_separate_or_sibling_folders_do_not_overlap(tmp_path: Path) -> None:
    """A mount beside the source (even one whose name starts with the source's) passes, with state_dir in the source."""
    assert overlap_problem(tmp_path / "src", tmp_path / "src2") is None
    assert overlap_problem(tmp_path / "a" / "src", tmp_path / "b") is None
    cfg = parse_config(_paths(tmp_path, tmp_path / "src", tmp_path / "mnt", tmp_path / "src" / ".state"), env={})
    assert cfg.dataset.mount == tmp_path / "mnt"


@pytest.mark.parametrize("state", ["mnt", "mnt/.domino-sync/state"])
def test_state_dir_inside_the_mount_is_a_config_error(tmp_path: Path, state: str) -> None:
    """A state_dir equal to or inside dataset.mount is one ConfigError naming state_dir."""
    with pytest.raises(ConfigError) as info:
        parse_config(_paths(tmp_path, tmp_path / "src", tmp_path / "mnt", tmp_path / state), env={})
    assert info.value.key == "state_dir"
    assert str(info.value).startswith("config: state_dir: got ")
    assert "outside the dataset mount" in str(info.value)


def test_check_mount_overlap_covers_a_mount_known_only_at_run_time(tmp_path: Path) -> None:
    """A mount derived later (embedded emulator) is checked by check_mount_overlap the same way."""
    cfg = parse_config(_paths(tmp_path, tmp_path / "src", tmp_path / "mnt", tmp_path / "emu" / "ds" / "st"), env={})
    check_mount_overlap(cfg, tmp_path / "elsewhere" / "ds")
    with pytest.raises(ConfigError, match=r"^config: dataset\.mount: .*inside source\.path"):
        check_mount_overlap(cfg, tmp_path / "src" / "mnt" / "ds")
    with pytest.raises(ConfigError, match=r"^config: state_dir: "):
        check_mount_overlap(cfg, tmp_path / "emu" / "ds")


@pytest.mark.parametrize(
    ("doc", "key", "shown"),
    [
        (with_(source__ignore="*.tmp"), "source.ignore", 'a list (e.g. ["*.tmp"])'),
        (with_(dataset__grants="bob"), "dataset.grants", 'a list (e.g. ["bob"])'),
        (with_(rules={"name": "a", "when": {"files": 1}}), "rules", "expected a list"),
        (with_(rules=[{"name": "a", "when": {"files": 1}, "tags": "v1"}]), "rules[0].tags", '["v1"]'),
    ],
)
def test_a_scalar_where_a_list_is_expected_says_a_list(doc: dict[str, Any], key: str, shown: str) -> None:
    """A string or mapping given for a list key is one ConfigError saying a list is expected, not pydantic's words."""
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    assert info.value.key == key
    assert shown in str(info.value)
    assert "valid tuple" not in str(info.value)


@pytest.mark.parametrize(("value", "seconds"), [(2, 2.0), (0.5, 0.5), ("2", 2.0), (" 1.5 ", 1.5), ("250ms", 0.25)])
def test_a_bare_number_is_seconds(value: Any, seconds: float) -> None:
    """A duration without a unit, as a number or a quoted number, is a number of seconds."""
    assert parse_config(with_(source__settle=value), env={}).source.settle == seconds


@pytest.mark.parametrize("value", ["2 parsecs", "-1", -1, float("nan"), float("inf"), [2]])
def test_a_bad_duration_says_a_bare_number_is_seconds(value: Any) -> None:
    """Every bad duration's message lists the units and says a bare number is seconds."""
    with pytest.raises(ConfigError) as info:
        parse_config(with_(source__settle=value), env={})
    assert info.value.key == "source.settle"
    assert str(info.value).endswith("expected a duration such as 200ms, 2s, 10m or 1h (a bare number is seconds)")


@pytest.mark.parametrize("named", ["api_key", "token_file", "api_proxy"])
def test_a_credential_in_the_file_takes_none_from_the_environment(named: str, tmp_path: Path) -> None:
    """A key, token file or proxy named in the config wins over all three of the environment (a Domino workspace
    always sets DOMINO_API_PROXY); the address still comes from DOMINO_API_HOST."""
    (tmp_path / "token").write_text("t-file")
    value = {"api_key": "k-file", "token_file": str(tmp_path / "token"), "api_proxy": "http://proxy.local"}[named]
    env = {
        "DOMINO_API_HOST": "https://d.example",
        "DOMINO_USER_API_KEY": "k-env",
        "DOMINO_TOKEN_FILE": "/env/token",
        "DOMINO_API_PROXY": "http://env-proxy",
    }
    cfg = parse_config(with_(**{f"domino__{named}": value}), env=env)
    got = {key: getattr(cfg.domino, key) for key in ("api_key", "token_file", "api_proxy")}
    expected = Path(value) if named == "token_file" else value
    assert {key: v for key, v in got.items() if v is not None} == {named: expected}
    assert cfg.domino.url == "https://d.example"


def test_without_a_credential_in_the_file_the_environment_gives_them() -> None:
    """With none in the file, every credential of the environment is taken (the client picks proxy, file, key)."""
    env = {"DOMINO_USER_API_KEY": "k-env", "DOMINO_API_PROXY": "http://env-proxy"}
    cfg = parse_config(BASE, env=env)
    assert (cfg.domino.api_key, cfg.domino.api_proxy) == ("k-env", "http://env-proxy")


def test_a_tilde_is_the_home_folder_in_every_path() -> None:
    """`~` in source.path, dataset.mount and state_dir means the home folder, as in a shell."""
    doc = with_(source__path="~/outbox", dataset__mount="~/mnt/d", domino__url="https://d.example")
    doc["state_dir"] = "~/state"
    cfg = parse_config(doc, env={})
    home = Path.home()
    assert (cfg.source.path, cfg.dataset.mount, cfg.state_dir) == (home / "outbox", home / "mnt/d", home / "state")


def test_a_missing_token_file_is_refused_only_where_it_would_be_read(tmp_path: Path) -> None:
    """DOMINO_TOKEN_FILE naming no file fails a config that would use it (named as the variable), not one whose
    API is the embedded emulator or whose proxy comes first."""
    env = {"DOMINO_TOKEN_FILE": str(tmp_path / "none")}
    parse_config(with_(domino={"url": "embedded"}), env=env)
    parse_config(with_(domino={"url": "https://d.example", "api_proxy": "http://proxy.local"}), env=env)
    with pytest.raises(ConfigError) as info:
        parse_config(with_(domino={"url": "https://d.example"}), env=env)
    assert info.value.key == "DOMINO_TOKEN_FILE"
    with pytest.raises(ConfigError) as info:
        parse_config(with_(domino={"url": "https://d.example", "token_file": str(tmp_path / "none")}), env={})
    assert info.value.key == "domino.token_file"


def test_a_secret_inside_a_wrong_value_is_not_shown() -> None:
    """A section given as a list (or the whole file as one) shows its shape, never an api_key inside it."""
    for doc in (with_(domino=[{"api_key": "sk-SECRET-1"}]), [{"api_key": "sk-SECRET-1"}]):
        with pytest.raises(ConfigError) as info:
            parse_config(doc, env={})
        assert "sk-SECRET-1" not in str(info.value) and "(hidden)" in str(info.value)


def test_yaml_merges_may_override_but_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("x: {<<: &m {<<: {a: 1}, a: 2}}\ny: *m\nsource: {path: in}\ndataset: {name: d}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "x"  # the unknown key, not a false "given twice" from the merge
    path.write_text("source: {path: in}\ndataset: {name: d}\nsource: {path: other}\n")
    with pytest.raises(ConfigError, match="given twice") as info:
        load_config(path)
    assert info.value.key == "source"


def test_listen_accepts_host_names_with_underscores() -> None:
    assert parse_config(with_(server={"listen": "domino_sync:9464"}), env={}).server.host == "domino_sync"
