"""An attacker with write access to the database: drops the append-only triggers,
edits audit_events, then puts the triggers back exactly as the migration made them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from clinicbridge.db.engine import Database


def _trigger_definitions(conn: sa.Connection) -> list[str]:
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'"
        )
    else:
        rows = conn.exec_driver_sql(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal"
        )
    return [row[0] for row in rows]


@contextmanager
def triggers_dropped(db: Database) -> Iterator[None]:
    with db.engine.begin() as conn:
        definitions = _trigger_definitions(conn)
        assert definitions, "the append-only triggers are missing"
        for definition in definitions:
            name = definition.split()[2]  # CREATE TRIGGER <name> ...
            on = "" if conn.dialect.name == "sqlite" else " ON audit_events"
            conn.exec_driver_sql(f"DROP TRIGGER {name}{on}")
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            for definition in definitions:
                conn.exec_driver_sql(definition)


def tamper(db: Database, sql: str, **params: Any) -> None:
    """Run one statement against the audit tables with the triggers out of the way."""
    with triggers_dropped(db), db.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def renumber_from(db: Database, seq: int, tenant_id: str, by: int) -> None:
    """Shift seq of events >= ``seq`` by ``by`` (in two steps: seq is unique)."""
    with triggers_dropped(db), db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit_events SET seq = -seq WHERE tenant_id = :t AND seq >= :s"),
            {"t": tenant_id, "s": seq},
        )
        conn.execute(
            sa.text("UPDATE audit_events SET seq = -seq + :by WHERE tenant_id = :t AND seq < 0"),
            {"t": tenant_id, "by": by},
        )
