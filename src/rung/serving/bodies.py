"""The control API's request bodies, as pydantic models.

Each model is strict (a ``true`` is not a version number, ``"3"`` is not
an integer) and forbids unknown fields. :func:`parse_body` turns pydantic's
:class:`~pydantic.ValidationError` into one :class:`~rung.errors.InputError`
naming the first field at fault (an unknown field first, then in the
model's field order) with a message written for the caller.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rung.delivery.rollout import STRATEGIES
from rung.errors import InputError

__all__ = ["Body", "DeploymentBody", "RouteBody", "parse_body"]

B = TypeVar("B", bound="Body")


class Body(BaseModel):
    """A JSON object with known fields; ``MESSAGES`` says what each one should be, ``NOT_AN_OBJECT`` what the body should."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    NOT_AN_OBJECT: ClassVar[str] = "expected a JSON object"
    MESSAGES: ClassVar[dict[str, str]] = {}


class DeploymentBody(Body):
    """``POST /api/deployments``: roll ``model:version`` out."""

    NOT_AN_OBJECT: ClassVar[str] = "expected an object with model and version (and optional strategy, force, reason)"
    MESSAGES: ClassVar[dict[str, str]] = {
        "model": "model: the registered model's name",
        "version": "version: a registered version number",
        "strategy": f"strategy: one of {', '.join(STRATEGIES)}",
        "force": "force must be true or false",
    }

    model: str = Field(min_length=1)
    version: int = Field(ge=1)
    strategy: Any = None
    force: bool = False
    reason: Any = None  # kept when it is a string, ignored otherwise

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: Any) -> Any:
        if value is not None and value not in STRATEGIES:
            raise ValueError("not a strategy")
        return value

    @property
    def reason_text(self) -> str | None:
        return self.reason if isinstance(self.reason, str) else None


class RouteBody(Body):
    """``PUT /api/routes/{name}``: a new routing table (its variants are checked by ``RoutingTable.build``)."""

    NOT_AN_OBJECT: ClassVar[str] = "expected an object with variants (and optional shadows, reason, expected_revision)"
    MESSAGES: ClassVar[dict[str, str]] = {
        "variants": "variants and shadows must be lists",
        "shadows": "variants and shadows must be lists",
        "expected_revision": "expected_revision must be an integer",
        "reason": "reason must be a string",
    }

    variants: list[Any]
    shadows: list[Any] = []
    expected_revision: int | None = None
    reason: str | None = None


def parse_body(model: type[B], body: Any) -> B:
    """``body`` (parsed JSON) as ``model``; else an :class:`~rung.errors.InputError` naming the field."""
    if not isinstance(body, dict):
        raise InputError(model.NOT_AN_OBJECT, "body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = exc.errors()
        unknown = sorted(str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden" and p["loc"])
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r}", unknown[0]) from exc
        order = list(model.model_fields)

        def place(problem: Any) -> int:
            loc = problem["loc"]
            return order.index(loc[0]) if loc and loc[0] in order else len(order)

        first = min(problems, key=place)
        name = str(first["loc"][0]) if first["loc"] else "body"
        raise InputError(model.MESSAGES.get(name, f"{name}: {first['msg']}"), name) from exc
