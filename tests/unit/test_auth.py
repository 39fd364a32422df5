"""rung.serving.auth and the routing store: tokens are hashed and role-checked; route writes are compare-and-set."""

from __future__ import annotations

from pathlib import Path

import pytest

from rung.delivery.routing import RoutingTable, set_routing, single_version
from rung.errors import AuthError, ConfigError, StaleRoute
from rung.serving.auth import authenticate, create_token, revoke_token
from rung.store import MetadataStore


@pytest.fixture
def store(tmp_path: Path) -> MetadataStore:
    store = MetadataStore(f"sqlite:///{tmp_path / 'rung.db'}")
    yield store
    store.close()


def test_a_token_is_stored_only_as_its_hash(store: MetadataStore) -> None:
    record, secret = create_token(store, role="deployer", name="ci")
    assert secret.startswith("rung_") and secret not in record.sha256
    assert [t.id for t in store.tokens()] == [record.id]
    assert authenticate(store, f"Bearer {secret}", "viewer").id == record.id
    assert authenticate(store, f"bearer {secret}", "deployer").id == record.id


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer rung_x_y"])
def test_missing_or_unknown_tokens_are_401(store: MetadataStore, header: str | None) -> None:
    create_token(store, role="admin")
    with pytest.raises(AuthError) as info:
        authenticate(store, header, "viewer")
    assert info.value.status == 401


def test_a_lower_role_is_403_and_a_revoked_token_is_401(store: MetadataStore) -> None:
    record, secret = create_token(store, role="viewer")
    with pytest.raises(AuthError) as info:
        authenticate(store, f"Bearer {secret}", "deployer")
    assert info.value.status == 403
    assert revoke_token(store, record.id) and not revoke_token(store, record.id)
    with pytest.raises(AuthError) as info:
        authenticate(store, f"Bearer {secret}", "viewer")
    assert info.value.status == 401


def test_unknown_role_is_a_config_error(store: MetadataStore) -> None:
    with pytest.raises(ConfigError, match="role"):
        create_token(store, role="root")


def test_route_revisions_grow_and_stale_writes_are_refused(store: MetadataStore) -> None:
    first = set_routing(store, single_version("churn", 1), actor="test", expected_revision=0)
    assert first.revision == 1 and store.route_revisions() == {"churn": 1}
    second = set_routing(store, RoutingTable.build("churn", [{"name": "a", "version": 2}]), actor="test", reason="ramp")
    assert second.revision == 2 and second.reason == "ramp"
    with pytest.raises(StaleRoute):
        set_routing(store, single_version("churn", 1), actor="test", expected_revision=1)
    assert RoutingTable.from_record(store.route("churn")).variants[0].version == 2
    assert [e.kind for e in store.events("churn")] == ["routing", "routing"]
