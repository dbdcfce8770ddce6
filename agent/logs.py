"""structlog setup: JSON lines off a TTY, coloured console lines on one, secrets scrubbed from every event.

Events are stable dotted names with fields: `log.info("sync.copied", path=..., bytes=..., ms=...)`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_FIELDS = re.compile(r"(api[_-]?key|token|secret|password|authorization)", re.IGNORECASE)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that no log line ever shows it, whatever field it lands in."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_FIELDS.search(key) and value is not None and key != "event":
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = redact(value)
        elif isinstance(value, BaseException):
            event[key] = redact(f"{value.__class__.__name__}: {value}")
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog to `stream` (stderr by default) as JSON or coloured console lines."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
    ]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **context: Any) -> structlog.typing.FilteringBoundLogger:
    """A lazy logger: it follows the configuration in force when it logs, not when it was created (module-level
    loggers are created at import, before `configure_logging` runs)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name, **context)
    return logger


def secrets_in(lines: Iterable[str]) -> list[str]:
    """The lines that contain a registered secret (for tests and self-checks)."""
    return [line for line in lines if any(secret in line for secret in _secrets)]
