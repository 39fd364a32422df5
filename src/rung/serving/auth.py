"""API tokens for the gateway's control API.

A token is shown once, at creation (``rung token create``); the store keeps
only its sha256, so a leaked database does not leak credentials. There are
no default credentials: until a token exists, the control API refuses every
call. Roles are ordered: ``viewer`` < ``deployer`` < ``admin``; a call needs
its role or a higher one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rung.errors import AuthError, ConfigError, PermissionDenied
from rung.store.records import TokenRecord

if TYPE_CHECKING:
    from rung.store import MetadataStore

__all__ = ["ROLES", "create_token", "authenticate", "revoke_token", "allows"]

ROLES = ("viewer", "deployer", "admin")
PREFIX = "rung_"


def allows(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: MetadataStore, *, role: str, name: str = "") -> tuple[TokenRecord, str]:
    """A new token with ``role``; returns its record and the secret (shown once, never stored)."""
    if role not in ROLES:
        raise ConfigError(f"role: '{role}' is not one of {', '.join(ROLES)}", field="role")
    token_id = secrets.token_hex(4)
    secret = f"{PREFIX}{token_id}_{secrets.token_urlsafe(24)}"
    record = TokenRecord(
        id=token_id,
        name=name or role,
        role=role,
        sha256=_digest(secret),
        created_at=datetime.now(UTC),
    )
    store.add_token(record)
    return record, secret


def authenticate(store: MetadataStore, header: str | None, needed: str) -> TokenRecord:
    """The token in an ``Authorization: Bearer ...`` header, if it grants ``needed``; else :class:`AuthError`.

    :class:`AuthError` (``status`` 401) for a missing, unknown or revoked
    token; :class:`PermissionDenied` (403) for a valid token whose role is too low.
    """
    if not header or not header.lower().startswith("bearer "):
        raise AuthError("send an API token: Authorization: Bearer <token> (create one with `rung token create`)")
    token = header[7:].strip()
    record = store.token_by_hash(_digest(token))
    if record is None or not hmac.compare_digest(record.sha256, _digest(token)):
        raise AuthError("unknown API token")
    if record.revoked_at is not None:
        raise AuthError(f"API token {record.id} was revoked")
    if not allows(record.role, needed):
        raise PermissionDenied(f"API token {record.id} has role {record.role}; this call needs {needed}")
    return record


def revoke_token(store: MetadataStore, token_id: str) -> bool:
    return store.revoke_token(token_id, datetime.now(UTC))

