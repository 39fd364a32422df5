"""Reading and answering HTTP bodies: the JSON helpers every gateway route shares.

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
from starlette.requests import Request
from starlette.responses import Response

from rung.errors import BodyTooLarge, NotFound, RequestInvalid, UnsupportedMediaType

__all__ = ["JSON", "json_response", "read_json", "request_id", "version_param"]

JSON = "application/json"
JSON_TYPES = (JSON, "application/*+json", "text/json")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON (orjson: numpy scalars and datetimes included)."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


async def read_json(request: Request, limit: int) -> Any:
    """The request's body parsed as JSON, read at most ``limit`` bytes far (never the whole of a larger one)."""
    content_type = request.headers.get("content-type")
    if content_type and content_type.split(";")[0].strip().lower() not in JSON_TYPES:
        raise UnsupportedMediaType(f"content type {content_type!r} is not supported; send application/json", "content-type")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"the body is {int(length)} bytes; the limit is {limit} (serve.max_body_mb)", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes (serve.max_body_mb)", "body")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise RequestInvalid("the body is empty; send a JSON object", "body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"the body is not valid JSON: {exc}", "body") from exc


def version_param(request: Request) -> int | None:
    """The path's version number: ASCII digits only (``str.isdigit`` also takes ``²`` and ``١``)."""
    raw = request.path_params.get("version")
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
