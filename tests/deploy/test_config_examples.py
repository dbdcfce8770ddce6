"""The example configurations in config/: each loads, validates, and says what its use needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agent.api.names import tag_problem
from agent.config import Config, CronWhen, EveryWhen, MarkerWhen, QuietWhen, load_config
from agent.errors import ConfigError

HOST = {
    "DOMINO_API_HOST": "https://domino.example.com"
}  # the examples take the API address from the environment, as deployed

EXAMPLES = ("local.yaml", "host-service.yaml", "kubernetes-sidecar.yaml", "marker-drops.yaml", "schedule.yaml")
CONFIG = Path(__file__).resolve().parents[2] / "config"
KEY_LINE = re.compile(r"^\s*(?:-\s+)?[A-Za-z_][\w-]*:(?:\s|$)")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
SAMPLE = {"rule": "drop", "seq": "42", "date": "20261125", "time": "134501", "marker": "run-0042"}


def load(name: str) -> Config:
    return load_config(CONFIG / name, env=HOST)


def test_every_example_has_its_own_test() -> None:
    """config/ holds exactly the examples this module tests one by one."""
    assert sorted(path.name for path in CONFIG.glob("*.yaml")) == sorted(EXAMPLES)


def test_local_example_is_the_readme_demo() -> None:
    """local.yaml runs against the embedded emulator with everything under ./.domino-sync and a _SUCCESS rule."""
    cfg = load("local.yaml")
    assert cfg.source.path == Path("outbox")
    assert cfg.source.settle == 0.5
    assert cfg.state_dir == Path(".domino-sync/state")
    assert cfg.domino.url == "embedded"
    assert cfg.domino.emulator.data_dir == Path(".domino-sync/emulator")
    assert (cfg.dataset.name, cfg.dataset.project_id, cfg.dataset.create) == ("local-demo", "project-local", True)
    assert cfg.dataset.mount is None
    assert len(cfg.rules) == 1
    rule = cfg.rules[0]
    assert rule.name == "drop"
    assert rule.when == MarkerWhen(marker="_SUCCESS")
    assert rule.tags == ("drop-{date}-{seq}", "latest")


def test_local_example_ignores_the_environments_domino_host() -> None:
    """The demo stays on the emulator even where DOMINO_API_HOST points at a real Domino."""
    cfg = load_config(CONFIG / "local.yaml", env={"DOMINO_API_HOST": "https://domino.example.com"})
    assert cfg.domino.url == "embedded"


def test_host_service_example_fits_the_systemd_unit() -> None:
    """host-service.yaml uses absolute paths, the unit's state directory, /mnt/data/<name> and a loopback server."""
    cfg = load("host-service.yaml")
    assert cfg.source.path.is_absolute()
    assert cfg.state_dir == Path("/var/lib/domino-sync")
    assert cfg.dataset.name
    assert cfg.dataset.mount == Path("/mnt/data") / cfg.dataset.name
    assert cfg.server.listen == "127.0.0.1:9464"
    assert cfg.shutdown_timeout == 20.0
    assert cfg.log.format == "json"
    assert cfg.domino.url == HOST["DOMINO_API_HOST"]  # the file names none: the environment's is used
    env = {"DOMINO_API_HOST": "https://domino.example.com", "DOMINO_USER_API_KEY": "k-host"}
    from_env = load_config(CONFIG / "host-service.yaml", env=env)
    assert (from_env.domino.url, from_env.domino.api_key) == ("https://domino.example.com", "k-host")


def test_kubernetes_sidecar_example_listens_for_the_kubelet() -> None:
    """kubernetes-sidecar.yaml listens on all interfaces, keeps state under the emptyDir and mounts /mnt/data/<name>."""
    cfg = load("kubernetes-sidecar.yaml")
    assert cfg.server.listen == "0.0.0.0:9464"
    assert cfg.server.port == 9464
    assert cfg.state_dir.is_relative_to("/var/lib/domino-sync")
    assert cfg.source.path == Path("/outbox")
    assert cfg.dataset.name
    assert cfg.dataset.mount == Path("/mnt/data") / cfg.dataset.name
    assert cfg.domino.url == HOST["DOMINO_API_HOST"]  # the file names none: the environment's is used
    assert cfg.log.format == "json"


def test_marker_drops_example_tags_with_the_marker() -> None:
    """marker-drops.yaml fires on markers, names snapshots after the marker's text and spaces them out."""
    cfg = load("marker-drops.yaml")
    assert cfg.rules
    assert all(isinstance(rule.when, MarkerWhen) for rule in cfg.rules)
    assert all(any("{marker}" in tag for tag in rule.tags) for rule in cfg.rules)
    assert any(rule.min_interval > 0 for rule in cfg.rules)
    assert cfg.dataset.id and cfg.dataset.mount


def test_schedule_example_has_cron_every_and_quiet_rules() -> None:
    """schedule.yaml holds a quiet rule, an every rule and a cron rule that fires even when nothing changed."""
    cfg = load("schedule.yaml")
    whens = {type(rule.when) for rule in cfg.rules}
    assert {QuietWhen, EveryWhen, CronWhen} <= whens
    crons = [rule.when for rule in cfg.rules if isinstance(rule.when, CronWhen)]
    assert any(when.always for when in crons)
    assert cfg.source.delete == "keep"


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_key_is_commented(name: str) -> None:
    """Every key of the example has a comment, on its line or just above it."""
    lines = (CONFIG / name).read_text(encoding="utf-8").splitlines()
    bare = []
    previous = ""
    for number, line in enumerate(lines, start=1):
        if KEY_LINE.match(line) and " # " not in line and not previous.lstrip().startswith("#"):
            bare.append(f"{name}:{number}: {line.strip()}")
        if line.strip():
            previous = line
    assert bare == []


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_example_holds_a_secret(name: str) -> None:
    """Keys come from the environment: no example sets domino.api_key or a token."""
    document = yaml.safe_load((CONFIG / name).read_text(encoding="utf-8"))
    domino = document.get("domino") or {}
    assert "api_key" not in domino
    assert "token_file" not in domino
    assert load(name).domino.api_key is None


@pytest.mark.parametrize("name", EXAMPLES)
def test_tag_templates_render_to_valid_tags(name: str) -> None:
    """Each tag template uses only known placeholders and renders to a valid Domino tag name."""
    for rule in load(name).rules:
        for template in rule.tags:
            unknown = set(PLACEHOLDER.findall(template)) - set(SAMPLE)
            assert not unknown, f"{rule.name}: unknown placeholder(s) {unknown} in {template!r}"
            rendered = template.format_map(SAMPLE)
            assert tag_problem(rendered) is None, f"{rule.name}: {template!r} renders to {rendered!r}"


def test_a_config_naming_a_mount_needs_an_api_address() -> None:
    """Without domino.url or DOMINO_API_HOST a config naming dataset.mount is a config error naming domino.url,
    not a run against the embedded emulator (which never sees that mount)."""
    with pytest.raises(ConfigError, match=r"^config: domino.url: .*DOMINO_API_HOST"):
        load_config(CONFIG / "host-service.yaml", env={})
