"""Helpers for the emulator tests: an HTTP client over real sockets, and a checker of answers against the
reference OpenAPI document (a copy of ../shared/reference/domino-public-api-datasetrw.json lives here)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator
from multidict import CIMultiDict
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from agent.emulator import RunningEmulator

SPEC_PATH = Path(__file__).with_name("domino-public-api-datasetrw.json")
SPEC_URI = "urn:domino-public-api-datasetrw"
V1 = "/api/datasetrw/v1"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
_UNSET: Any = object()


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


class Client:
    """Calls one emulator as one user. Paths not starting with /api or /__ are under /api/datasetrw/v1."""

    def __init__(self, session: aiohttp.ClientSession, emu: RunningEmulator, key: str | None) -> None:
        self.session = session
        self.emu = emu
        self.key = key

    def as_user(self, user: str | None) -> Client:
        return Client(self.session, self.emu, self.emu.keys[user] if user else None)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = _UNSET,
        data: bytes | str | None = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        url = self.emu.url + (path if path.startswith(("/api", "/__")) else V1 + path)
        sent = dict(headers or {})
        if self.key is not None and "Authorization" not in sent:
            sent.setdefault("X-Domino-Api-Key", self.key)
        kwargs: dict[str, Any] = {"headers": sent, "params": params}
        if json_body is not _UNSET:
            kwargs["json"] = json_body
        elif data is not None:
            kwargs["data"] = io.BytesIO(data) if isinstance(data, bytes) else data
        async with self.session.request(method, url, **kwargs) as response:
            raw = await response.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            return Reply(response.status, body, CIMultiDict(response.headers))

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, body: Any = _UNSET, **kwargs: Any) -> Reply:
        return await self.call("POST", path, json_body=body, **kwargs)

    async def patch(self, path: str, body: Any = _UNSET, **kwargs: Any) -> Reply:
        return await self.call("PATCH", path, json_body=body, **kwargs)

    async def delete(self, path: str, body: Any = _UNSET, **kwargs: Any) -> Reply:
        return await self.call("DELETE", path, json_body=body, **kwargs)


Connect = Callable[..., Client]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """`connect(emu, "alice")`: a Client for that user (None: no key) sharing one aiohttp session."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        def make(emu: RunningEmulator, user: str | None = "alice") -> Client:
            return Client(session, emu, emu.keys[user] if user else None)

        yield make


class OpenApi:
    """Validates answers against the response schemas the reference OpenAPI document gives per operation."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)

    def _validate(self, schema: dict[str, Any], body: Any) -> None:
        if "$ref" in schema and schema["$ref"].startswith("#"):
            schema = {"$ref": SPEC_URI + schema["$ref"]}
        Draft202012Validator(schema, registry=self.registry).validate(body)

    def schema(self, name: str, body: Any) -> None:
        """Validate `body` against components/schemas/<name>."""
        self._validate({"$ref": f"#/components/schemas/{name}"}, body)

    def check(self, method: str, template: str, reply: Reply) -> None:
        """Validate the reply against the operation's documented answer for its status. Statuses the document
        does not list for the operation (409, 429, 503) must carry the generic {"error": "..."} body."""
        path = template if template.startswith("/api") else V1 + template
        operation = self.doc["paths"][path][method.lower()]
        response = operation["responses"].get(str(reply.status))
        if response is None:
            assert reply.status in (409, 413, 429, 503), f"{reply.status} undocumented for {method} {template}"
            assert isinstance(reply.body, dict) and isinstance(reply.body.get("error"), str), reply.body
            return
        if "$ref" in response:
            response = self.doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        self._validate(response["content"]["application/json"]["schema"], reply.body)


@pytest.fixture(scope="session")
def openapi() -> OpenApi:
    return OpenApi(json.loads(SPEC_PATH.read_text()))


class ErrorShapes:
    """Assertions on error answers in each dialect's shape; each returns the message."""

    @staticmethod
    def seed(reply: Reply, status: int, code: str | None = None) -> str:
        assert reply.status == status, (reply.status, reply.body)
        error = reply.body["error"]
        assert set(error) == {"code", "message"} and error["message"], reply.body
        if code is not None:
            assert error["code"] == code
        return str(error["message"])

    @staticmethod
    def domino(reply: Reply, status: int) -> str:
        assert reply.status == status, (reply.status, reply.body)
        if status in (401, 403):
            assert set(reply.body) == {"errors", "requestId"} and reply.body["errors"], reply.body
            return str(reply.body["errors"][0])
        assert set(reply.body) == {"error"} and reply.body["error"], reply.body
        return str(reply.body["error"])


@pytest.fixture(scope="session")
def errors() -> ErrorShapes:
    return ErrorShapes()
