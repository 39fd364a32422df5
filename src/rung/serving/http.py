"""Reading and answering HTTP bodies: the JSON (and, for MLflow scoring, CSV) helpers every gateway route shares.

A body is read within a size limit and parsed once; what cannot be read is
a :class:`~rung.errors.RequestInvalid` (or one of its subclasses) naming
the part at fault, which :mod:`rung.serving.responses` turns into the
answer. Kept apart from the routes so the prediction routes and the
control API import it without importing each other.
"""

from __future__ import annotations

import os
import re
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from rung.errors import BodyTooLarge, NotFound, RequestInvalid, UnsupportedMediaType

__all__ = ["CSV", "JSON", "json_response", "media_type", "parse_json", "read_body", "read_json", "request_id",
           "version_number", "version_param"]

JSON = "application/json"
CSV = "text/csv"
JSON_TYPES = (JSON, "application/*+json", "text/json")
UTF8 = ("utf-8", "utf8", "us-ascii")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON (orjson: numpy scalars and datetimes included)."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def media_type(request: Request, accepted: tuple[str, ...] = (JSON,)) -> str:
    """What the body is: :data:`JSON` (also when no type is given) or another of ``accepted``; else a 415 listing them.

    JSON's parameters are ignored (JSON is UTF-8); a CSV body must be UTF-8,
    as ``mlflow models serve`` reads it.
    """
    content_type = request.headers.get("content-type")
    if not content_type:
        return JSON
    mime, _, parameters = content_type.partition(";")
    mime = mime.strip().lower()
    if mime in JSON_TYPES:
        return JSON
    if mime not in accepted:
        raise UnsupportedMediaType(f"content type {content_type[:100]!r} is not supported; send {' or '.join(accepted)}",
                                   "content-type")
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in UTF8:
            raise UnsupportedMediaType(f"{mime} is read as UTF-8, not {value.strip()[:40]!r}; send charset=utf-8",
                                       "content-type")
    return mime


async def read_body(request: Request, limit: int, *, send: str = "a JSON object") -> bytes:
    """The request's body, read at most ``limit`` bytes far (never the whole of a larger one); an empty one is refused."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"the body is {int(length)} bytes; the limit is {limit} (serve.max_body_mb)", "body")
    chunks, size = [], 0
    receive = request.receive  # the ASGI messages themselves: a body in one message (the usual case) is not copied
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes (serve.max_body_mb)", "body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not raw:
        raise RequestInvalid(f"the body is empty; send {send}", "body")
    return raw


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"the body is not valid JSON: {exc}", "body") from exc


async def read_json(request: Request, limit: int) -> Any:
    """The request's body parsed as JSON (a 415 unless it is sent as JSON), read within ``limit`` bytes."""
    media_type(request)
    return parse_json(await read_body(request, limit))


def version_param(request: Request) -> int | None:
    """The path's version number: ASCII digits only (``str.isdigit`` also takes ``²`` and ``١``)."""
    return version_number(request.path_params.get("version"))


def version_number(raw: str | None) -> int | None:
    """A version as a request names it (a path, gRPC's ``model_version``): ``None`` for none, else a number >= 1."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and int(raw) >= 1):
        raise NotFound(f"version {raw[:20]!r} is not a model version number", field="model_version")
    return int(raw)


def request_id(given: Any) -> str:
    """The caller's request id when it is safe to echo in a header; otherwise a fresh one."""
    if isinstance(given, str) and REQUEST_ID.match(given):
        return given
    return os.urandom(8).hex()
