"""The one exception hierarchy of domino-sync.

    AgentError
    ├── ConfigError                 a bad configuration file, flag or environment value
    ├── ApiError                    the Datasets API answered with an error or could not be reached
    │   ├── BadRequestError         400 / 422: the server's message says what was wrong
    │   ├── AuthenticationError     401: no key, an unknown key, an expired token
    │   ├── PermissionDeniedError   403
    │   ├── NotFoundError           404
    │   ├── ConflictError           409
    │   ├── RateLimitedError        429 (carries retry_after)
    │   ├── ServerError             5xx
    │   ├── NetworkError            connection refused, reset, DNS, TLS, timeouts
    │   └── ProtocolError           an answer the client cannot understand
    ├── MountError                  the dataset mount is missing, not a folder, not writable, full
    ├── SourceError                 the source folder cannot be read
    ├── StateError                  the state database cannot be opened or written
    └── NoAgentError                no running agent answers on the config's server address

Library exceptions (aiohttp.ClientError, OSError, sqlite3.Error) are translated into these where they
enter; nothing else escapes into the core. Messages never contain an API key or a token.
"""

from __future__ import annotations

from typing import Any

from agent.urls import hide_url_password


class AgentError(Exception):
    """Base of every error domino-sync raises on purpose."""


class ConfigError(AgentError):
    """A configuration value is invalid: names the key, the value and what was expected."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        if value is _NOT_SHOWN:
            super().__init__(f"config: {key}: {expected}")
            return
        shown = "(missing)" if value is _MISSING else hide_url_password(repr(value))
        super().__init__(f"config: {key}: got {shown}, expected {expected}")

    def under(self, section: str) -> ConfigError:
        """The same error with its key inside `section` (`timeout` checked by the client is `domino.timeout`)."""
        return ConfigError(f"{section}.{self.key}", self.value, self.expected)


_MISSING: Any = object()
MISSING = _MISSING
_NOT_SHOWN: Any = object()
NOT_SHOWN = _NOT_SHOWN
"""A value an error does not show, and `expected` says it all: an unknown key's (a misspelt `api_kye` holds a
secret), a key given twice."""


class ApiError(AgentError):
    """The Datasets API failed a call. `status` is None when no answer arrived; `retry_after` is the server's
    wait in seconds, when it gave one (429 and 5xx)."""

    retryable = False

    def __init__(
        self, method: str, path: str, status: int | None, message: str, retry_after: float | None = None
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.retry_after = retry_after
        where = f"{method} {path}"
        what = f"HTTP {status}: {message}" if status is not None else message
        super().__init__(f"{where}: {what}")


class BadRequestError(ApiError):
    """400 or 422: the request was refused as invalid."""


class AuthenticationError(ApiError):
    """401: the key or token is missing, unknown or expired."""


class PermissionDeniedError(ApiError):
    """403: the caller may not do this to that dataset."""


class NotFoundError(ApiError):
    """404: no such dataset, snapshot, tag or grant (or it was deleted)."""


class ConflictError(ApiError):
    """409: the request conflicts with the current state (a duplicate name, say)."""


class RateLimitedError(ApiError):
    """429: too many requests; `retry_after` is the server's wait in seconds, when it gave one."""

    retryable = True


class ServerError(ApiError):
    """5xx: the server failed; worth retrying for calls that are safe to repeat."""

    retryable = True


class NetworkError(ApiError):
    """The server could not be reached or did not answer in time."""

    retryable = True


class ProtocolError(ApiError):
    """The server answered something the client cannot read (not JSON, missing fields)."""


class MountError(AgentError):
    """The dataset mount cannot take files right now."""


class SourceError(AgentError):
    """The source folder cannot be read."""


class StateError(AgentError):
    """The state database cannot be opened or written."""


class OutputError(AgentError):
    """A command's output could not be written (stdout on a full disk, a pipe closed by its reader)."""


class NoAgentError(AgentError):
    """No running agent answers on the config's server address (or the config turns the server off)."""
