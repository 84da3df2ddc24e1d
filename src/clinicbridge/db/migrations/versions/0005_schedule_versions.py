"""schedule versions: a per-provider counter that database triggers bump

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:50:00

Everything that shapes a provider's bookable slots lives in five tables, plus the
provider's own timezone and active flag and the rules of the services given. A
trigger on each bumps ``providers.schedule_version`` in the same transaction as
the change, whoever writes it (the API, a job, a calendar sync, plain SQL), so
computed availability can be reused exactly as long as nothing changed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("time_claims", "busy_blocks", "working_hours", "schedule_exceptions", "service_providers")
_BUMP = "UPDATE providers SET schedule_version = schedule_version + 1 WHERE id = {row}.provider_id"
_BUMP_SELF = "UPDATE providers SET schedule_version = schedule_version + 1 WHERE id = NEW.id"
# a service's rules (duration, notice, active...) shape the slots of all who give it
_BUMP_GIVERS = (
    "UPDATE providers SET schedule_version = schedule_version + 1 WHERE id IN "
    "(SELECT provider_id FROM service_providers WHERE service_id = NEW.id)"
)


def upgrade() -> None:
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("schedule_version", sa.BigInteger(), server_default="0", nullable=False)
        )
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            for event, rows in (
                ("INSERT", ("NEW",)),
                ("DELETE", ("OLD",)),
                ("UPDATE", ("OLD", "NEW")),
            ):
                # on UPDATE both rows: a change may move time from one provider to another
                body = "; ".join(_BUMP.format(row=row) for row in rows)
                op.execute(
                    f"CREATE TRIGGER {table}_schedule_version_{event.lower()} AFTER {event} "
                    f"ON {table} BEGIN {body}; END"
                )
        # (SQLite's recursive triggers are off: the inner UPDATE does not fire again)
        op.execute(
            "CREATE TRIGGER providers_schedule_version AFTER UPDATE OF timezone, is_active "
            f"ON providers BEGIN {_BUMP_SELF}; END"
        )
        op.execute(
            "CREATE TRIGGER services_schedule_version AFTER UPDATE ON services "
            f"BEGIN {_BUMP_GIVERS}; END"
        )
        return
    op.execute(
        "CREATE FUNCTION bump_schedule_version() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF TG_OP <> 'INSERT' THEN {_BUMP.format(row='OLD')}; END IF; "
        "IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.provider_id <> OLD.provider_id) "
        f"THEN {_BUMP.format(row='NEW')}; END IF; "
        "RETURN NULL; END $$"
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_schedule_version AFTER INSERT OR UPDATE OR DELETE "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION bump_schedule_version()"
        )
    op.execute(
        "CREATE FUNCTION bump_own_schedule_version() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN NEW.schedule_version := OLD.schedule_version + 1; RETURN NEW; END $$"
    )
    op.execute(
        "CREATE TRIGGER providers_schedule_version BEFORE UPDATE OF timezone, is_active "
        "ON providers FOR EACH ROW EXECUTE FUNCTION bump_own_schedule_version()"
    )
    op.execute(
        "CREATE FUNCTION bump_givers_schedule_version() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {_BUMP_GIVERS}; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER services_schedule_version AFTER UPDATE ON services "
        "FOR EACH ROW EXECUTE FUNCTION bump_givers_schedule_version()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_schedule_version_{event}")
        op.execute("DROP TRIGGER IF EXISTS providers_schedule_version")
        op.execute("DROP TRIGGER IF EXISTS services_schedule_version")
    else:
        for table in (*TABLES, "providers", "services"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_schedule_version ON {table}")
        for name in (
            "bump_schedule_version",
            "bump_own_schedule_version",
            "bump_givers_schedule_version",
        ):
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.drop_column("schedule_version")
