"""The one table from rung's errors to answers: an HTTP status, a gRPC status, the field at fault.

The gateway, its control API and the dashboard install :func:`exception_handlers`
on their Starlette apps, so a route raises the error that says what went
wrong and never builds an error response itself. The answer is JSON,
``{"error": message, "field": name}`` (``field`` only when known): the
error's own ``field`` first, else the entry's default (a 401 is always about
``authorization``).

:data:`STATUSES` is plain data so that a gRPC server can map the same
classes (its ``grpc`` names are ``grpc.StatusCode`` members). A class not in
the table takes its nearest listed ancestor's entry. An exception that is
not a :class:`~rung.errors.RungError` is a bug: a 500 with a generic message,
logged with its traceback, which never reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rung import errors as e
from rung.serving.http import json_response

__all__ = ["Status", "STATUSES", "UNKNOWN", "status_of", "field_of", "error_body", "error_response", "exception_handlers"]


@dataclass(frozen=True)
class Status:
    """How one error class is answered: HTTP status, gRPC status name, and the field named when the error has none."""

    http: int
    grpc: str
    field: str | None = None


STATUSES: dict[type[e.RungError], Status] = {
    e.RungError: Status(400, "FAILED_PRECONDITION"),
    e.ConfigError: Status(422, "INVALID_ARGUMENT"),
    e.MissingDependency: Status(501, "UNIMPLEMENTED"),
    e.ProjectNotFound: Status(404, "NOT_FOUND"),
    e.ProjectExists: Status(409, "ALREADY_EXISTS"),
    e.StoreError: Status(500, "INTERNAL"),
    e.StoreUnavailable: Status(503, "UNAVAILABLE"),
    e.StoreConflict: Status(409, "ABORTED"),
    e.TrackingError: Status(503, "UNAVAILABLE"),
    e.DataError: Status(400, "FAILED_PRECONDITION"),
    e.DataValidationError: Status(422, "INVALID_ARGUMENT"),
    e.PipelineError: Status(400, "FAILED_PRECONDITION"),
    e.StepFailed: Status(400, "FAILED_PRECONDITION"),
    e.RunAbandoned: Status(409, "ABORTED"),
    e.NotFound: Status(404, "NOT_FOUND"),
    e.RunNotFound: Status(404, "NOT_FOUND"),
    e.ModelVersionNotFound: Status(404, "NOT_FOUND"),
    e.ReproductionMismatch: Status(409, "FAILED_PRECONDITION"),
    e.IntegrityError: Status(409, "FAILED_PRECONDITION"),
    e.ArtifactCorrupted: Status(409, "FAILED_PRECONDITION"),
    e.ArtifactUnavailable: Status(503, "UNAVAILABLE"),
    e.RequestInvalid: Status(400, "INVALID_ARGUMENT"),
    e.InputError: Status(422, "INVALID_ARGUMENT"),
    e.BodyTooLarge: Status(413, "RESOURCE_EXHAUSTED"),
    e.UnsupportedMediaType: Status(415, "INVALID_ARGUMENT"),
    e.ServingUnavailable: Status(503, "UNAVAILABLE"),
    e.NotServed: Status(503, "UNAVAILABLE"),
    e.WorkerDied: Status(503, "UNAVAILABLE"),
    e.PredictionFailed: Status(500, "INTERNAL"),
    e.CertificationError: Status(400, "FAILED_PRECONDITION"),
    e.AdoptionRefused: Status(409, "FAILED_PRECONDITION"),
    e.AuthError: Status(401, "UNAUTHENTICATED", "authorization"),
    e.PermissionDenied: Status(403, "PERMISSION_DENIED", "authorization"),
    e.StaleRoute: Status(409, "ABORTED", "expected_revision"),
    e.DeployRefused: Status(409, "FAILED_PRECONDITION", "version"),
    e.StaleDeployment: Status(409, "ABORTED", "version"),
    e.LeaseLost: Status(409, "ABORTED"),
    e.DriftError: Status(409, "FAILED_PRECONDITION"),
    e.LoopNotClosed: Status(409, "FAILED_PRECONDITION"),
    e.AssessError: Status(400, "FAILED_PRECONDITION"),
}
UNKNOWN = Status(500, "INTERNAL")  # not rung's error: a bug, answered without its details


def status_of(exc: BaseException) -> Status:
    """The entry of ``exc``'s class, or of its nearest listed ancestor; :data:`UNKNOWN` for an error not rung's."""
    for cls in type(exc).__mro__:
        status = STATUSES.get(cls)
        if status is not None:
            return status
    return UNKNOWN


def field_of(exc: BaseException) -> str | None:
    """The request field ``exc`` is about: its own, else its class's default."""
    own = getattr(exc, "field", None) if isinstance(exc, e.RungError) else None
    return own if own is not None else status_of(exc).field


def error_body(message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return body


def error_response(exc: e.RungError, headers: dict[str, str] | None = None) -> Response:
    """The JSON answer to ``exc``, per :data:`STATUSES`."""
    return json_response(error_body(str(exc), field_of(exc)), status_of(exc).http, headers)


Handler = Callable[[Request, Exception], Awaitable[Response]]


def exception_handlers(log: logging.Logger, *, generic: str,
                       answer: Callable[[Request, Exception, Status], Response] | None = None,
                       after: Callable[[Request, Response], None] | None = None) -> dict[Any, Handler]:
    """Starlette ``exception_handlers`` answering every error from the table.

    ``generic`` is the message of a 500 for an exception that is not rung's
    (logged here with its traceback). ``answer`` renders the response in
    place of the JSON one (the dashboard's pages); ``after`` sees each
    response before it goes (a request id header, an error count). A rung
    error answered with a 5xx is logged too, with its cause.
    """

    def respond(request: Request, exc: Exception, status: Status) -> Response:
        if answer is not None:
            response = answer(request, exc, status)
        elif isinstance(exc, e.RungError):
            response = error_response(exc)
        else:
            response = json_response(error_body(generic), status.http)
        if after is not None:
            after(request, response)
        return response

    async def on_rung_error(request: Request, exc: Exception) -> Response:
        status = status_of(exc)
        if status.http >= 500:
            log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc, exc_info=exc)
        return respond(request, exc, status)

    async def on_unknown(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return respond(request, exc, UNKNOWN)

    return {e.RungError: on_rung_error, Exception: on_unknown}
