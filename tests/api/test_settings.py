"""ClientSettings: environment and config sources, precedence, validation, and a repr without the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.api.settings import ClientSettings
from agent.config import parse_config
from agent.errors import ConfigError


def test_from_env_reads_python_domino_variables() -> None:
    """DOMINO_API_HOST, DOMINO_USER_API_KEY, DOMINO_TOKEN_FILE and DOMINO_API_PROXY fill the settings."""
    env = {
        "DOMINO_API_HOST": "https://domino.example.com/",
        "DOMINO_USER_API_KEY": "key-from-env-0001",
        "DOMINO_TOKEN_FILE": "/var/run/token",
        "DOMINO_API_PROXY": "http://localhost:8899",
    }
    s = ClientSettings.from_env(env)
    assert s.url == "https://domino.example.com"
    assert s.api_key == "key-from-env-0001" and s.token_file == Path("/var/run/token")
    assert s.api_proxy == "http://localhost:8899"
    assert s.credential_kind == "proxy"


def test_explicit_values_override_environment() -> None:
    """Overrides that are not None win over the environment; None leaves the environment's value."""
    env = {"DOMINO_API_HOST": "https://env.example.com", "DOMINO_USER_API_KEY": "key-from-env-0001"}
    s = ClientSettings.from_env(env, url="http://flag.example.com", api_key=None, dialect="domino", timeout=3)
    assert s.url == "http://flag.example.com" and s.api_key == "key-from-env-0001"
    assert s.dialect == "domino" and s.timeout == 3


def test_from_env_without_url_is_a_config_error() -> None:
    """No URL anywhere names DOMINO_API_HOST in the error."""
    with pytest.raises(ConfigError, match="DOMINO_API_HOST"):
        ClientSettings.from_env({})


def test_from_env_rejects_unknown_overrides() -> None:
    """A misspelt override is a programming error, not silently ignored."""
    with pytest.raises(TypeError, match="timout"):
        ClientSettings.from_env({"DOMINO_API_HOST": "http://h"}, timout=3)


def test_from_config_uses_the_domino_section() -> None:
    """The config's domino section (file over environment; a credential in the file takes none from the
    environment) becomes the client's settings."""
    cfg = parse_config(
        {
            "source": {"path": "in"},
            "dataset": {"name": "d"},
            "domino": {"api_key": "key-from-file-0001", "dialect": "seed", "burst": 3, "timeout": "5s"},
        },
        env={"DOMINO_USER_API_KEY": "key-from-env-0001", "DOMINO_TOKEN_FILE": "/t"},
    )
    s = ClientSettings.from_config(cfg.domino, "http://127.0.0.1:9000")
    assert s.api_key == "key-from-file-0001" and s.token_file is None
    assert (s.dialect, s.burst, s.timeout, s.url) == ("seed", 3, 5.0, "http://127.0.0.1:9000")
    assert s.credential_kind == "api_key"


def test_repr_hides_the_key() -> None:
    """repr() of settings never shows the API key."""
    s = ClientSettings(url="http://h.example", api_key="key-very-secret-0001")
    assert "key-very-secret-0001" not in repr(s) and "http://h.example" in repr(s)
    assert s.credential_kind == "api_key"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "ftp://x"),
        ("url", "http://"),
        ("url", "http://:80"),
        ("url", "http://h:port"),
        ("url", "http://h:99999"),
        ("url", "http://[::1"),
        ("url", "http://host\\@evil.example"),
        ("url", "http://exa mple.com"),
        ("api_proxy", "localhost:8899"),
        ("dialect", "swagger"),
        ("requests_per_second", 0),
        ("burst", 0),
        ("max_concurrency", 1.5),
        ("max_attempts", 0),
        ("timeout", -1),
        ("backoff_base", -0.1),
    ],
)
def test_invalid_values_are_config_errors(field: str, value: object) -> None:
    """Each invalid value is refused with a ConfigError naming the field."""
    values: dict[str, object] = {"url": "http://h.example", field: value}
    with pytest.raises(ConfigError, match=field):
        ClientSettings(**values)  # type: ignore[arg-type]


def test_paths_given_as_strings_become_paths() -> None:
    """token_file and ca_bundle given as str are stored as Path."""
    s = ClientSettings(url="http://h.example", token_file="/t", ca_bundle="/ca.pem")  # type: ignore[arg-type]
    assert s.token_file == Path("/t") and s.ca_bundle == Path("/ca.pem")
    assert s.with_(timeout=2).timeout == 2
