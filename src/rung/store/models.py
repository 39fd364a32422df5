"""Model versions as rung records them at registration: where the files are and their digests."""

from __future__ import annotations

from typing import Any

from rung.clock import utc
from rung.store import schema
from rung.store.engine import StoreBase, values_of
from rung.store.records import ModelVersionRecord

__all__ = ["ModelVersionRecords"]


class ModelVersionRecords(StoreBase):
    """One row per registered ``name:version``; MLflow holds the files, the store what rung checks them against."""

    def add_model_version(self, record: ModelVersionRecord) -> None:
        """Record a registered version; the same ``name:version`` twice is a StoreConflict."""
        values = values_of(record)
        self._write(f"record model version {record.ref}",
                    lambda c: c.execute(schema.model_versions.insert().values(**values)))

    def get_model_version(self, name: str, version: int) -> ModelVersionRecord | None:
        """``name:version``, or None if rung never registered it."""
        table = schema.model_versions
        with self._read(f"read model version {name}:{version}") as conn:
            row = conn.execute(table.select().where(table.c.name == name, table.c.version == version)).first()
        return _model_version(row) if row else None

    def list_model_versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        """Versions by model name, newest version first."""
        table = schema.model_versions
        query = table.select().order_by(table.c.name, table.c.version.desc())
        if name:
            query = query.where(table.c.name == name)
        with self._read("list model versions") as conn:
            return [_model_version(row) for row in conn.execute(query)]


def _model_version(row: Any) -> ModelVersionRecord:
    data = dict(row._mapping)
    data["created_at"] = utc(data["created_at"])
    return ModelVersionRecord(**data)
