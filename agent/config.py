"""The configuration file: frozen pydantic models, validated once at start.

Precedence: a value in the file, then the environment (DOMINO_API_HOST and friends, for `domino.*`), then the
default. Any error becomes one `ConfigError` line naming the key, the value and what was expected.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent import defaults
from agent.api.models import Dialect, Role
from agent.errors import MISSING, NOT_SHOWN, ConfigError
from agent.units import DURATION_EXPECTED, SIZE_EXPECTED, parse_duration, parse_size
from agent.urls import URL_EXPECTED, url_problem

DURATION_EXPECTED_IN_CONFIG = f"{DURATION_EXPECTED} (a bare number is seconds)"
_BARE_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


def _duration(value: Any) -> float:
    """`2s`, `500ms`, `10m`; a bare number, also quoted (`2`, `"2"`, `0.5`), is seconds."""
    if isinstance(value, str) and _BARE_NUMBER.match(value):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(DURATION_EXPECTED_IN_CONFIG)
    if isinstance(value, str | int | float):
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(DURATION_EXPECTED_IN_CONFIG) from None
    raise ValueError(DURATION_EXPECTED_IN_CONFIG)


def _size(value: Any) -> int:
    if isinstance(value, str | int):
        return parse_size(value)
    raise ValueError(SIZE_EXPECTED)


def _share(value: Any) -> float:
    """`50%` -> 0.5; a bare number in [0, 1] is a fraction."""
    expected = "a share of the mount's files such as 50% or 0.5"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(expected) from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(expected)
    if not 0 <= number <= 1:
        raise ValueError(expected)
    return number


def _above_zero(value: float) -> float:
    if value <= 0:
        raise ValueError("a duration above zero such as 500ms or 2s")
    return value


def _rescan_period(value: float) -> float:
    if value < 0.1:
        raise ValueError("a duration of 100ms or more (each rescan walks the whole source)")
    return value


Duration = Annotated[float, BeforeValidator(_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), AfterValidator(_above_zero)]
Size = Annotated[int, BeforeValidator(_size)]
Share = Annotated[float, BeforeValidator(_share)]
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]  # `~` is the home folder, as in a shell


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SourceConfig(_Model):
    path: UserPath
    settle: Duration = 2.0
    ignore: tuple[str, ...] = defaults.IGNORE
    delete: Literal["mirror", "keep"] = "mirror"
    max_delete: Share = 0.5
    rescan: Annotated[float, BeforeValidator(_duration), AfterValidator(_rescan_period)] = 600.0
    copy_workers: int = Field(default=defaults.COPY_WORKERS, ge=1, le=64)
    create: bool = False  # create source.path at start when it is missing (demos; off where the source is a mount)

    @field_validator("path", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("the folder to watch, such as /data/outbox")
        return value


class GrantConfig(_Model):
    principal: str = Field(min_length=1)
    role: Role
    principal_type: Literal["user", "organization"] = "user"

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Role:
        if not isinstance(value, str):
            raise ValueError("read, write or admin")
        try:
            return Role.parse(value)
        except ValueError:
            raise ValueError("read, write or admin (or DatasetRwReader/Editor/Owner)") from None


class DatasetConfig(_Model):
    mount: UserPath | None = None
    id: str | None = None
    name: str | None = None
    project_id: str | None = None
    create: bool = False
    description: str | None = None
    grants: tuple[GrantConfig, ...] = ()
    grants_exclusive: bool = False
    durability: Literal["snapshot", "batch"] = "snapshot"  # when copies are flushed to disk (sync/flushmark.py)

    @model_validator(mode="after")
    def _named(self) -> DatasetConfig:
        if not self.id and not self.name:
            raise ValueError("dataset.id, or dataset.name (with dataset.project_id)")
        return self


class EmulatorConfig(_Model):
    """Settings of the in-process emulator used when `domino.url` is `embedded`."""

    data_dir: UserPath = Path(".domino-sync/emulator")
    mount_root: UserPath | None = None
    dialect: Dialect = Dialect.SEED


class DominoConfig(_Model):
    url: str | None = None  # None: DOMINO_API_HOST, else "embedded"
    api_key: str | None = Field(default=None, repr=False, min_length=1)
    token_file: UserPath | None = None
    api_proxy: str | None = None
    dialect: Literal["auto", "seed", "domino"] = "auto"
    ca_bundle: UserPath | None = None
    requests_per_second: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    burst: int = Field(default=10, ge=1)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    timeout: PositiveDuration = 30.0
    emulator: EmulatorConfig = EmulatorConfig()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "embedded":
            return value
        if url_problem(value) is not None:
            raise ValueError(f"'embedded' or {URL_EXPECTED}")
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _a_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("an existing file: a PEM bundle of CA certificates")
        return value

    @field_validator("api_proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None and url_problem(value) is not None:
            raise ValueError(f"the API proxy's address: {URL_EXPECTED}")
        return value


class MarkerWhen(_Model):
    marker: str = Field(min_length=1)

    @field_validator("marker")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or value in (".", ".."):
            raise ValueError("a file name without '/' such as _SUCCESS")
        if any(char in value for char in "*?["):  # taken literally, "*.done" would wait for a file named so
            raise ValueError("one exact file name such as _SUCCESS, not a pattern")
        return value


class QuietWhen(_Model):
    quiet: PositiveDuration


class FilesWhen(_Model):
    files: int = Field(ge=1)


class BytesWhen(_Model):
    bytes: Annotated[Size, Field(ge=1)]


class EveryWhen(_Model):
    every: PositiveDuration
    always: bool = False


class CronWhen(_Model):
    cron: str
    always: bool = False

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError("a cron expression such as '0 * * * *'")
        return value


class ManualWhen(_Model):
    manual: Literal[True]


When = MarkerWhen | QuietWhen | FilesWhen | BytesWhen | EveryWhen | CronWhen | ManualWhen

_WHEN_KEYS: Mapping[str, type[_Model]] = {
    "marker": MarkerWhen,
    "quiet": QuietWhen,
    "files": FilesWhen,
    "bytes": BytesWhen,
    "every": EveryWhen,
    "cron": CronWhen,
    "manual": ManualWhen,
}


class RuleConfig(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    when: When
    glob: str | None = None
    tags: tuple[str, ...] = ()
    min_interval: Duration = 0.0

    @field_validator("when", mode="before")
    @classmethod
    def _one_trigger(cls, value: Any) -> Any:
        expected = "one trigger: " + ", ".join(_WHEN_KEYS)
        if not isinstance(value, Mapping):
            raise ValueError(expected)
        triggers = [key for key in value if key in _WHEN_KEYS]
        if len(triggers) != 1:
            raise ValueError(expected)
        return _WHEN_KEYS[triggers[0]].model_validate(value)

    @field_validator("tags")
    @classmethod
    def _tag_templates(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        from agent.rules.templates import check_template

        for template in tags:
            check_template(template)
        return tags

    @field_validator("glob")
    @classmethod
    def _usable_glob(cls, glob: str | None) -> str | None:
        from agent.rules.engine import check_glob  # imported here: the engine imports this module

        if glob is not None:
            check_glob(glob)
        return glob


class ServerConfig(_Model):
    listen: str = "127.0.0.1:9464"
    enabled: bool = True

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or not _listen_host(host):
            raise ValueError("HOST:PORT such as 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _listen_host(host: str) -> bool:
    """An IPv4 address, a bracketed IPv6 one, or a host name (not `999.1.1.1`: all digits and dots is an address)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        version = 6
    elif all(c.isdigit() or c == "." for c in host):
        version = 4
    else:
        return re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?", host) is not None  # compose names have _
    try:
        return ipaddress.ip_address(host).version == version
    except ValueError:
        return False


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Model):
    source: SourceConfig
    dataset: DatasetConfig
    domino: DominoConfig = DominoConfig()
    state_dir: UserPath = defaults.STATE_DIR
    rules: tuple[RuleConfig, ...] = ()
    server: ServerConfig = ServerConfig()
    shutdown_timeout: Duration = 20.0
    log: LogConfig = LogConfig()

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[RuleConfig, ...]) -> tuple[RuleConfig, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"unique rule names (duplicate {rule.name!r})")
            seen.add(rule.name)
        return rules


ENV_KEYS: Mapping[str, str] = {
    "DOMINO_API_HOST": "url",
    "DOMINO_USER_API_KEY": "api_key",
    "DOMINO_TOKEN_FILE": "token_file",
    "DOMINO_API_PROXY": "api_proxy",
}


CREDENTIALS = ("api_key", "token_file", "api_proxy")


def parse_config(data: Any, env: Mapping[str, str] | None = None) -> Config:
    """Validate a decoded YAML document, fill `domino.*` from the environment, or raise ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError("(top level)", _hide_secrets(data), "a mapping with source: and dataset:")
    env = os.environ if env is None else env
    data = dict(data)
    domino = data.get("domino") or {}
    domino_in_file = dict(domino) if isinstance(domino, Mapping) else {}
    if isinstance(domino, Mapping):
        domino = dict(domino)
        # credentials go as one: a key, token file or proxy in the file wins over every one of the environment
        # (a Domino workspace always sets DOMINO_API_PROXY, which must not displace the key the config names)
        credential_in_file = any(domino.get(key) is not None for key in CREDENTIALS)
        for var, key in ENV_KEYS.items():
            if key in CREDENTIALS and credential_in_file:
                continue
            if domino.get(key) is None and env.get(var):
                domino[key] = env[var]
        data["domino"] = domino
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, data) from None
    _check_token_file(config.domino, from_env=domino_in_file.get("token_file") is None)
    if config.dataset.mount is not None:
        check_mount_overlap(config, config.dataset.mount)
        if config.domino.url is None:  # the embedded emulator by default: it never sees this mount
            raise ConfigError(
                "domino.url",
                None,
                "the Domino API address (or DOMINO_API_HOST) for a config that names dataset.mount; `embedded` runs "
                "the local emulator, which serves its own folders",
            )
    return config


def _check_token_file(domino: DominoConfig, *, from_env: bool) -> None:
    """The token file the client will read must be there (a missing one would fail every call): checked when it
    is the credential in use (no proxy before it, a real API), and named as it was given."""
    path = domino.token_file
    if path is None or domino.api_proxy or domino.url == "embedded" or path.is_file():
        return
    key = "DOMINO_TOKEN_FILE" if from_env else "domino.token_file"
    raise ConfigError(key, str(path), "an existing file holding a token")


def _real(path: Path) -> Path:
    """`path` made absolute with symlinks resolved as far as it exists (the rest is kept as written)."""
    return path.expanduser().resolve(strict=False)


def overlap_problem(source: Path, mount: Path) -> str | None:
    """Why `mount` cannot be the mount for `source` (same folder, one inside the other), or None if apart.

    Compares real paths: symlinks resolved, paths that do not exist yet resolved as far as they exist."""
    real_source, real_mount = _real(source), _real(mount)
    if real_mount == real_source:
        return f"it is source.path itself, {real_source}"
    if real_mount.is_relative_to(real_source):
        return f"it is inside source.path {real_source}"
    if real_source.is_relative_to(real_mount):
        return f"it holds source.path {real_source}"
    return None


def check_mount_overlap(config: Config, mount: Path) -> None:
    """Raise ConfigError when `mount` (given as dataset.mount or derived) overlaps source.path, or when
    state_dir lies inside it (the agent's state would be copied into the dataset and its snapshots)."""
    problem = overlap_problem(config.source.path, mount)
    if problem is not None:
        raise ConfigError("dataset.mount", str(mount), f"a folder apart from source.path ({problem})")
    real_mount, real_state = _real(mount), _real(config.state_dir)
    if real_state.is_relative_to(real_mount):
        raise ConfigError(
            "state_dir",
            str(config.state_dir),
            f"a folder outside the dataset mount {real_mount} (the agent's state would be copied into the dataset)",
        )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file, or raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("--config", str(path), "an existing YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", str(path), f"a readable UTF-8 file ({exc.__class__.__name__})") from None
    try:
        data = _load_yaml(text)
    except _DuplicateKey as exc:
        lines = f"line {exc.first}" if exc.first == exc.again else f"lines {exc.first} and {exc.again}"
        raise ConfigError(exc.key, NOT_SHOWN, f"given twice ({lines}): YAML would keep only the last") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError("--config", str(path), f"valid YAML{where}") from None
    return parse_config(data, env)


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, again: int) -> None:
        self.key, self.first, self.again = key, first, again


def _load_yaml(text: str) -> Any:
    """YAML's safe load, refusing a key given twice in one mapping (where plain YAML keeps the last one, and a
    second `source:` section would silently replace the first). Checked on the document as written, before
    `<<` merges (whose keys may be overridden) are applied."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicates(node, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicates(node: yaml.Node, seen_nodes: set[int]) -> None:
    if id(node) in seen_nodes:  # an alias of a node already looked at
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if (key_node.tag, key_node.value) in keys:
                    raise _DuplicateKey(key_node.value, keys[key_node.tag, key_node.value], line)
                keys[key_node.tag, key_node.value] = line
            _refuse_duplicates(value_node, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicates(item, seen_nodes)


def _first_error(exc: ValidationError, data: Any) -> ConfigError:
    errors = exc.errors(include_url=False)
    # a misspelt required key is both missing and unknown: the unknown one says what to fix
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [part for part in error["loc"] if not _is_union_tag(part)]
    key = _dotted(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        return ConfigError(key, NOT_SHOWN, f"no such key ({_spelling_hint(loc)})")
    if kind == "missing":
        return ConfigError(key, MISSING, "a value (this key is required)")
    message = _expected(error)
    value = _hide_secrets(error.get("input", _lookup(data, loc)))
    if loc and isinstance(loc[-1], str) and _SECRET_KEY.search(loc[-1]):
        value = "(hidden)"
    if kind in ("tuple_type", "list_type"):
        example = f" (e.g. {json.dumps([value], ensure_ascii=False)})" if isinstance(value, str) else ""
        return ConfigError(key or "(top level)", value, f"a list{example}")
    if kind == "value_error" and loc == [] and "dataset" in message:
        return ConfigError("dataset", MISSING, message)
    return ConfigError(key or "(top level)", value, message)


_SECRET_KEY = re.compile(r"(^|_)(key|password|secret|token)$", re.IGNORECASE)
"""Keys whose value an error never shows (`api_key`; not `token_file`, a path)."""


def _hide_secrets(value: Any) -> Any:
    """`value` as an error may show it: inside a mapping or a list, a secret key's value is hidden."""
    if isinstance(value, Mapping):
        return {
            key: "(hidden)" if isinstance(key, str) and _SECRET_KEY.search(key) else _hide_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_hide_secrets(item) for item in value]
    return value


_PLAIN: Mapping[str, str] = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "path_type": "a path",
    "dict_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
}


def _expected(error: Any) -> str:
    """What a pydantic error says was expected, in this module's words (`a whole number`, not `Input should be a
    valid integer, unable to parse string as an integer`)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _PLAIN:
        return _PLAIN[kind]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), None)
        sign = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        return f"a number {sign} {bound}"
    if kind == "string_too_short":
        return "a non-empty string" if ctx.get("min_length") == 1 else f"at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return "letters, digits, '_', '.' and '-' only"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, ", "Input should be "):
        message = message.removeprefix(prefix)
    return message


def _spelling_hint(loc: list[Any]) -> str:
    """`check the spelling`, with the nearest key the config knows at that place when one is close."""
    known = _known_keys(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1) if loc else []
    return f"check the spelling: did you mean {close[0]}?" if close else "check the spelling"


def _known_keys(loc: list[Any]) -> list[str]:
    """The keys the model at `loc` (a path into Config) takes; none when the path leads nowhere known."""
    models: list[type[BaseModel]] = [Config]
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a tuple field: its models were found with the field
        fields = [model.model_fields[part] for model in models if part in model.model_fields]
        models = [found for field in fields for found in _models_in(field.annotation)]
    return list(dict.fromkeys(key for model in models for key in model.model_fields))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field holds: itself, the items of a tuple of them, an optional one, the members of
    a union (a rule's `when`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in getattr(annotation, "__args__", ()) for model in _models_in(arg)]


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and part.endswith("When")


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _lookup(data: Any, loc: list[Any]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return data
