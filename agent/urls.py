"""Checks on the URLs a config or a flag gives (the API, its proxy), and hiding their passwords. urllib, not
yarl: checking a config must not import the HTTP stack (api/lazy.py)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

URL_EXPECTED = "an http:// or https:// URL with a host"


def url_problem(value: object) -> str | None:
    """What is wrong with `value` as the address of an HTTP API (None: nothing)."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "an http:// or https:// URL"
    try:
        parts = urlsplit(value)
        _ = parts.port  # ValueError when the port is not a number from 0 to 65535
        host = None if any(c == "\\" or c.isspace() for c in parts.netloc) else parts.hostname
    except ValueError:
        host = None
    return None if host else URL_EXPECTED


_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@\s:]*)(?P<password>:[^/?#\s]*)?@")


def hide_url_password(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` in it replaced by `***` (and a lone
    `scheme://token@host` user, which is often a token): a URL quoted back in an error (a malformed one,
    before any client registered its password as a secret) keeps it hidden."""

    def hidden(m: re.Match[str]) -> str:
        user = m.group("user") if m.group("password") is not None else ""
        return f"{m.group('scheme')}{user}{':' if user else ''}***@"

    return _URL_USERINFO.sub(hidden, text)
