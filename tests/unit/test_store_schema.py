"""rung.store.schema.HEAD names the newest migration, and a new store is at HEAD."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

import rung.store.schema as schema
from rung.store import MetadataStore

MIGRATIONS = Path(schema.__file__).parent / "migrations"


def scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def test_head_matches_the_migration_scripts() -> None:
    heads = scripts().get_heads()
    assert len(heads) == 1, f"the migrations have several heads: {heads}"
    assert heads[0] == schema.HEAD


def test_a_new_store_is_migrated_to_head_with_every_table(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path}/rung.db")
    try:
        with store.engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        store.close()
    assert version == schema.HEAD
    assert set(schema.metadata.tables) <= tables


def test_migrated_columns_match_the_schema(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path}/rung.db")
    try:
        inspector = sa.inspect(store.engine)
        for name, table in schema.metadata.tables.items():
            migrated = {c["name"] for c in inspector.get_columns(name)}
            assert migrated == {c.name for c in table.columns}, name
    finally:
        store.close()


def test_reopening_a_store_keeps_its_data(tmp_path: Path) -> None:
    from datetime import datetime

    from rung.store import PipelineRun

    url = f"sqlite:///{tmp_path}/rung.db"
    first = MetadataStore(url)
    started = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    first.create_run(PipelineRun(id="abc123", project="p", pipeline="x", status="running", trigger="t", started_at=started), steps=["a"])
    first.close()
    second = MetadataStore(url)
    try:
        run = second.get_run("abc")
        assert run.id == "abc123"
        assert run.started_at == started
        assert [s.name for s in second.steps("abc123")] == ["a"]
    finally:
        second.close()
