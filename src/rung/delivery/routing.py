"""Routing tables: which versions of a model answer which share of traffic.

A table lists *variants* (name, version, weight) and *shadows* (versions
that get a copy of each request, answered by nobody). Choosing a variant
is a pure function of the request key and the table, so it is testable,
reproducible and the same on every gateway process:

* a request with a key (``X-Rung-Key`` or the declared key field) hashes
  to a point ``u`` in [0, 1); the variant whose cumulative-weight interval
  holds ``u`` answers. The same key always lands on the same variant while
  the table is unchanged (sticky A/B assignment).
* variants are laid out in the table's order. Put the candidate first:
  raising its weight then only *adds* keys to it (a canary ramp never moves
  a user back and forth).
* a request without a key gets a random point.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rung.errors import ConfigError

if TYPE_CHECKING:
    from rung.store import MetadataStore
    from rung.store.records import Fence, RouteRecord

__all__ = ["Variant", "RoutingTable", "key_point", "set_routing", "single_version"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Variant:
    name: str
    version: int
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "weight": self.weight}


@dataclass(frozen=True)
class RoutingTable:
    """A validated table; build one with :meth:`build` or :meth:`from_record`."""

    model: str
    variants: tuple[Variant, ...]
    shadows: tuple[Variant, ...] = ()
    revision: int = 0
    updated_at: datetime | None = None
    updated_by: str = ""
    reason: str | None = None
    _bounds: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def build(
        cls,
        model: str,
        variants: Sequence[dict[str, Any] | Variant],
        shadows: Sequence[dict[str, Any] | Variant] = (),
        **meta: Any,
    ) -> RoutingTable:
        """Check a table and precompute its cumulative weights; :class:`ConfigError` names the bad field."""
        parsed = tuple(_variant(v, f"variants[{i}]") for i, v in enumerate(variants))
        shadow = tuple(_variant(v, f"shadows[{i}]", shadow=True) for i, v in enumerate(shadows))
        if not parsed:
            raise ConfigError("variants: a routing table needs at least one variant", field="variants")
        names = [v.name for v in parsed + shadow]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ConfigError(f"variants: the name '{duplicate}' is used twice", field="variants")
        total = sum(v.weight for v in parsed)
        if total <= 0:
            raise ConfigError("variants: the weights add up to 0; give at least one variant a positive weight", field="variants")
        bounds, running = [], 0.0
        for v in parsed:
            running += v.weight / total
            bounds.append(running)
        bounds[-1] = 1.0
        return cls(model=model, variants=parsed, shadows=shadow, _bounds=tuple(bounds), **meta)

    @classmethod
    def from_record(cls, record: RouteRecord) -> RoutingTable:
        return cls.build(
            record.model,
            record.variants,
            record.shadows,
            revision=record.revision,
            updated_at=record.updated_at,
            updated_by=record.updated_by,
            reason=record.reason,
        )

    @property
    def versions(self) -> set[int]:
        """Every version the table needs loaded (variants and shadows)."""
        return {v.version for v in self.variants + self.shadows}

    def share(self, name: str) -> float:
        """The fraction of traffic variant ``name`` answers."""
        total = sum(v.weight for v in self.variants)
        return sum(v.weight for v in self.variants if v.name == name) / total

    def choose(self, key: str | None) -> Variant:
        """The variant that answers a request with ``key`` (random when ``key`` is None)."""
        point = key_point(self.model, key) if key is not None else random.random()
        for variant, bound in zip(self.variants, self._bounds, strict=False):
            if point < bound:
                return variant
        return self.variants[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "revision": self.revision,
            "variants": [v.to_dict() | {"share": round(self.share(v.name), 6)} for v in self.variants],
            "shadows": [{"name": v.name, "version": v.version} for v in self.shadows],
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by,
            "reason": self.reason,
        }


def key_point(model: str, key: str) -> float:
    """A stable point in [0, 1) for ``key``; salted with the model so two models split independently."""
    digest = hashlib.blake2b(f"{model}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def single_version(model: str, version: int, name: str = "champion") -> RoutingTable:
    return RoutingTable.build(model, [Variant(name, version, 1.0)])


def set_routing(
    store: MetadataStore,
    table: RoutingTable,
    *,
    actor: str,
    reason: str | None = None,
    expected_revision: int | None = None,
    fence: Fence | None = None,
) -> RoutingTable:
    """Store ``table`` as the model's new routing (revision + 1) with its audit event, in one transaction.

    :class:`~rung.errors.StaleRoute` when ``expected_revision`` is no longer
    the stored one (also when two writers create the table at once), and
    :class:`~rung.errors.LeaseLost` for a ``fence`` whose lease is gone.
    """
    now = datetime.now(UTC)

    def event(record: RouteRecord) -> dict[str, Any]:
        return {"kind": "routing", "actor": actor, "subject": table.model, "time": now,
                "data": RoutingTable.from_record(record).to_dict()}

    record = store.set_route(
        table.model,
        [v.to_dict() for v in table.variants],
        [v.to_dict() for v in table.shadows],
        actor=actor,
        reason=reason,
        time=now,
        expected_revision=expected_revision,
        event=event,
        fence=fence,
    )
    return RoutingTable.from_record(record)


def _variant(value: dict[str, Any] | Variant, where: str, *, shadow: bool = False) -> Variant:
    if isinstance(value, Variant):
        raw: dict[str, Any] = value.to_dict()
    elif isinstance(value, dict):
        raw = value
    else:
        raise ConfigError(f"{where}: expected an object with name, version and weight", field=where)
    unknown = set(raw) - {"name", "version", "weight", "share"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field; use name, version, weight",
                          field=f"{where}.{sorted(unknown)[0]}")
    version = raw.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"{where}.version: expected a model version number >= 1, got {version!r}", field=f"{where}.version")
    name = raw.get("name") or ("shadow" if shadow else f"v{version}")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}.name: {name!r} is not a valid variant name (letters, digits, . _ -)", field=f"{where}.name")
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0 <= weight < float("inf")):
        raise ConfigError(f"{where}.weight: expected a number >= 0, got {weight!r}", field=f"{where}.weight")
    return Variant(name, version, float(weight))
