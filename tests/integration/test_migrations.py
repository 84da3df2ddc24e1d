"""Migrations build the same schema as the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from clinicbridge.db import models  # noqa: F401
from clinicbridge.db.base import Base
from clinicbridge.db.engine import create_database
from clinicbridge.db.migrate import current_revision, downgrade, head_revision, upgrade


def test_upgrade_matches_the_models_and_downgrades_cleanly(empty_database_url: str) -> None:
    db = create_database(empty_database_url)
    try:
        upgrade(db.engine)
        with db.engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
        downgrade(db.engine, "base")
        with db.engine.connect() as conn:
            assert current_revision(conn) is None
        upgrade(db.engine)
    finally:
        db.dispose()


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = create_database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    db.dispose()


def test_wal_is_checkpointed_off_the_commit_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    import sqlalchemy as sa

    from clinicbridge.db.engine import SQLITE_AUTOCHECKPOINT_PAGES, WalCheckpointer

    db = create_database(f"sqlite:///{tmp_path / 'wal.db'}")
    with db.engine.connect() as conn:
        auto = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert auto == SQLITE_AUTOCHECKPOINT_PAGES
    with db.write() as session:
        session.execute(sa.text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    for _ in range(50):
        with db.write() as session:
            session.execute(sa.text("INSERT INTO notes (body) VALUES (:b)"), {"b": "x" * 4000})
    checkpointer = WalCheckpointer(db, every=0.05)
    checkpointer.start()
    try:
        deadline = time.monotonic() + 5
        while checkpointer.last is None or checkpointer.last[1] == 0:
            assert time.monotonic() < deadline, checkpointer.last
            time.sleep(0.02)
    finally:
        checkpointer.stop()
    busy, frames, done = checkpointer.last
    assert busy == 0 and frames > 0 and done == frames  # the WAL was copied back
    db.dispose()


def test_memberships_migration_upgrades_and_downgrades(empty_database_url: str) -> None:
    import sqlalchemy as sa

    tables = {"membership_plans", "memberships", "stripe_customers"}
    db = create_database(empty_database_url)
    try:
        upgrade(db.engine)
        assert tables <= set(sa.inspect(db.engine).get_table_names())
        downgrade(db.engine, "0011")
        with db.engine.connect() as conn:
            assert current_revision(conn) == "0011"
        assert not tables & set(sa.inspect(db.engine).get_table_names())
        upgrade(db.engine)
        assert tables <= set(sa.inspect(db.engine).get_table_names())
    finally:
        db.dispose()
