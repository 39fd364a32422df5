"""API tokens: only their sha256 is stored, so the database never holds a usable secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rung.clock import utc
from rung.store import schema
from rung.store.engine import StoreBase, values_of
from rung.store.records import TokenRecord

__all__ = ["TokenRecords"]


class TokenRecords(StoreBase):
    """Tokens by digest (what authentication looks up), listed, revoked."""

    def add_token(self, record: TokenRecord) -> None:
        """Record a new token (its digest, name and role)."""
        values = values_of(record)
        self._write(f"record API token {record.name}", lambda c: c.execute(schema.api_tokens.insert().values(**values)))

    def token_by_hash(self, sha256: str) -> TokenRecord | None:
        """The token with this digest, revoked or not, or None."""
        table = schema.api_tokens
        with self._read("look up an API token") as conn:
            row = conn.execute(table.select().where(table.c.sha256 == sha256)).first()
        return _token(row) if row else None

    def tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        table = schema.api_tokens
        with self._read("list API tokens") as conn:
            return [_token(row) for row in conn.execute(table.select().order_by(table.c.created_at))]

    def revoke_token(self, token_id: str, time: datetime) -> bool:
        """Revoke a token; False if there is no such token or it was revoked already."""
        table = schema.api_tokens
        query = table.update().where(table.c.id == token_id, table.c.revoked_at.is_(None)).values(revoked_at=time)
        return bool(self._write(f"revoke API token {token_id}", lambda c: c.execute(query).rowcount))


def _token(row: Any) -> TokenRecord:
    data = dict(row._mapping)
    data["created_at"] = utc(data["created_at"])
    data["revoked_at"] = utc(data["revoked_at"])
    return TokenRecord(**data)
