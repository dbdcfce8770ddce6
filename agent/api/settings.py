"""How to reach the Datasets API: endpoint, credentials, dialect, TLS, rate limits, timeouts and retries.

Precedence: explicit values (flags, `overrides`) > the config file's `domino:` section > the environment
(`DOMINO_API_HOST`, `DOMINO_USER_API_KEY`, `DOMINO_TOKEN_FILE`, `DOMINO_API_PROXY`, the variables python-domino
reads). When several credentials are set the client uses one of them, in python-domino's order: the API proxy,
then the token file, then the API key (see `agent.api.auth`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from agent.errors import MISSING, ConfigError
from agent.logs import register_secret
from agent.urls import url_problem

if TYPE_CHECKING:
    from agent.config import DominoConfig

DialectChoice = Literal["auto", "seed", "domino"]
DIALECT_CHOICES: tuple[DialectChoice, ...] = ("auto", "seed", "domino")

ENV_URL = "DOMINO_API_HOST"
ENV_API_KEY = "DOMINO_USER_API_KEY"
ENV_TOKEN_FILE = "DOMINO_TOKEN_FILE"  # noqa: S105 - the name of a variable, not a secret
ENV_API_PROXY = "DOMINO_API_PROXY"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything `DatasetsClient` needs. The API key never shows in `repr`."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    api_proxy: str | None = None
    dialect: DialectChoice = "auto"
    ca_bundle: Path | None = None
    requests_per_second: float = 10.0
    burst: int = 10
    max_concurrency: int = 4
    timeout: float = 30.0
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _check_url("url", self.url))
        if self.api_proxy is not None:
            object.__setattr__(self, "api_proxy", _check_url("api_proxy", self.api_proxy))
        if self.dialect not in DIALECT_CHOICES:
            raise ConfigError("dialect", self.dialect, "auto, seed or domino")
        for name in ("token_file", "ca_bundle"):
            value: Any = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))  # a str from a caller without types
        _positive("requests_per_second", self.requests_per_second)
        _positive("timeout", self.timeout)
        _positive("backoff_cap", self.backoff_cap)
        if self.backoff_base < 0:
            raise ConfigError("backoff_base", self.backoff_base, "a number of seconds >= 0")
        for name in ("burst", "max_concurrency", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(name, value, "a whole number >= 1")
        register_secret(self.api_key)
        register_secret(urlsplit(self.url).password)  # https://user:password@host: the password never shows

    @property
    def credential_kind(self) -> Literal["proxy", "token_file", "api_key", "none"]:
        """Which credential the client will use: proxy > token file > key, as python-domino does."""
        if self.api_proxy:
            return "proxy"
        if self.token_file is not None:
            return "token_file"
        if self.api_key:
            return "api_key"
        return "none"

    @classmethod
    def from_config(cls, domino: DominoConfig, url: str) -> ClientSettings:
        """Settings from the config's `domino:` section (already merged with the environment) and a resolved
        URL (the config's may be `embedded`, which the caller turns into the emulator's address)."""
        try:
            return cls._from_config(domino, url)
        except ConfigError as exc:
            raise in_domino_section(exc) from None

    @classmethod
    def _from_config(cls, domino: DominoConfig, url: str) -> ClientSettings:
        return cls(
            url=url,
            api_key=domino.api_key,
            token_file=domino.token_file,
            api_proxy=domino.api_proxy,
            dialect=domino.dialect,
            ca_bundle=domino.ca_bundle,
            requests_per_second=domino.requests_per_second,
            burst=domino.burst,
            max_concurrency=domino.max_concurrency,
            timeout=domino.timeout,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> ClientSettings:
        """Settings from python-domino's environment variables; `overrides` that are not None win."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            "url": env.get(ENV_URL) or None,
            "api_key": env.get(ENV_API_KEY) or None,
            "token_file": Path(env[ENV_TOKEN_FILE]) if env.get(ENV_TOKEN_FILE) else None,
            "api_proxy": env.get(ENV_API_PROXY) or None,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        if not values["url"]:
            raise ConfigError(ENV_URL, MISSING, "the API's URL (give --url or set DOMINO_API_HOST)")
        return cls(**values)

    def with_(self, **changes: Any) -> ClientSettings:
        """A copy with `changes` applied (and validated)."""
        return replace(self, **changes)


def in_domino_section(exc: ConfigError) -> ConfigError:
    """A ConfigError about a client setting, named as the config file names it (`timeout` is `domino.timeout`,
    the `token_file` a request could not read is `domino.token_file`); any other as it is."""
    return exc.under("domino") if exc.key in _FIELDS else exc


def _check_url(key: str, value: Any) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise ConfigError(key, value, problem)
    return str(value).rstrip("/")


def _positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(key, value, "a number > 0")


_FIELDS = frozenset(f.name for f in fields(ClientSettings))
