"""calendar sync and video visits: OAuth accounts, authorization requests, calendar
connections, exports, imported blocks, video meetings

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 11:00:00

Imported busy time stays in ``busy_blocks`` (the schedule-version triggers of 0005 keep
the slot cache exact). On SQLite the new columns need a batch "move and copy" of the table,
which drops its triggers: they are created again right after. PostgreSQL alters the table
in place (a copy would drop its trigger there too).
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from alembic import op

import clinicbridge.db.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FK_NAME = "fk_busy_blocks_connection_id_calendar_connections"


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, clinicbridge.db.base.UTCDateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "calendar_accounts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=32), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("tokens", sa.JSON(), nullable=False),
        _ts("access_expires_at"),
        sa.Column("token_version", sa.Integer(), nullable=False),
        _ts("refresh_lease_until", nullable=True),
        sa.Column("refresh_lease_owner", sa.String(length=64), nullable=True),
        _ts("last_refresh_at", nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("authorized_by", sa.String(length=64), nullable=False),
        _ts("authorized_at"),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("calendar_accounts", "integration_id", "integrations"),
        _fk("calendar_accounts", "provider_id", "providers"),
        _fk("calendar_accounts", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_accounts")),
        sa.UniqueConstraint(
            "integration_id",
            "provider_id",
            name=op.f("uq_calendar_accounts_integration_id_provider_id"),
        ),
    )
    op.create_index(
        op.f("ix_calendar_accounts_tenant_id"), "calendar_accounts", ["tenant_id"], unique=False
    )
    op.create_index(
        op.f("ix_calendar_accounts_provider_id"),
        "calendar_accounts",
        ["provider_id"],
        unique=False,
    )

    op.create_table(
        "calendar_oauth_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=32), nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("code_verifier", sa.Text(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("redirect_uri", sa.String(length=1024), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
        _fk("calendar_oauth_requests", "integration_id", "integrations"),
        _fk("calendar_oauth_requests", "provider_id", "providers"),
        _fk("calendar_oauth_requests", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_oauth_requests")),
        sa.UniqueConstraint("state_hash", name=op.f("uq_calendar_oauth_requests_state_hash")),
    )
    op.create_index(
        op.f("ix_calendar_oauth_requests_tenant_id"),
        "calendar_oauth_requests",
        ["tenant_id"],
        unique=False,
    )

    op.create_table(
        "calendar_connections",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=True),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("calendar", sa.String(length=1024), nullable=False),
        sa.Column("import_busy", sa.Boolean(), nullable=False),
        sa.Column("export_bookings", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sync_token", sa.Text(), nullable=True),
        sa.Column("sync_state", sa.JSON(), nullable=False),
        _ts("window_start", nullable=True),
        _ts("window_end", nullable=True),
        sa.Column("has_push", sa.Boolean(), nullable=False),
        sa.Column("push_id", sa.String(length=255), nullable=True),
        sa.Column("push_resource", sa.String(length=255), nullable=True),
        _ts("push_expires_at", nullable=True),
        sa.Column("push_error", sa.String(length=500), nullable=True),
        _ts("push_error_at", nullable=True),
        _ts("sync_requested_at", nullable=True),
        _ts("last_sync_at", nullable=True),
        _ts("last_success_at", nullable=True),
        _ts("last_full_sync_at", nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        _ts("last_error_at", nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_changes", sa.Integer(), nullable=False),
        sa.Column("blocks", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("calendar_connections", "account_id", "calendar_accounts"),
        _fk("calendar_connections", "integration_id", "integrations"),
        _fk("calendar_connections", "provider_id", "providers"),
        _fk("calendar_connections", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_connections")),
        sa.UniqueConstraint(
            "provider_id",
            "integration_id",
            "calendar",
            name=op.f("uq_calendar_connections_provider_id_integration_id_calendar"),
        ),
        sa.UniqueConstraint("push_id", name=op.f("uq_calendar_connections_push_id")),
    )
    op.create_index(
        op.f("ix_calendar_connections_tenant_id"),
        "calendar_connections",
        ["tenant_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_calendar_connections_provider_id"),
        "calendar_connections",
        ["provider_id"],
        unique=False,
    )

    op.create_table(
        "calendar_exports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=1024), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("calendar_exports", "booking_id", "bookings"),
        _fk("calendar_exports", "connection_id", "calendar_connections"),
        _fk("calendar_exports", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_exports")),
        sa.UniqueConstraint(
            "connection_id", "booking_id", name=op.f("uq_calendar_exports_connection_id_booking_id")
        ),
    )
    op.create_index(
        op.f("ix_calendar_exports_tenant_id"), "calendar_exports", ["tenant_id"], unique=False
    )
    op.create_index(
        op.f("ix_calendar_exports_booking_id"), "calendar_exports", ["booking_id"], unique=False
    )

    op.create_table(
        "video_meetings",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        _ts("starts_at"),
        _ts("ends_at"),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("video_meetings", "booking_id", "bookings"),
        _fk("video_meetings", "integration_id", "integrations"),
        _fk("video_meetings", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_video_meetings")),
        sa.UniqueConstraint("booking_id", name=op.f("uq_video_meetings_booking_id")),
    )
    op.create_index(
        op.f("ix_video_meetings_tenant_id"), "video_meetings", ["tenant_id"], unique=False
    )

    with op.batch_alter_table("busy_blocks", recreate=_recreate()) as batch_op:
        batch_op.add_column(sa.Column("connection_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("external_group", sa.String(length=255), nullable=True))
        batch_op.create_foreign_key(
            FK_NAME, "calendar_connections", ["connection_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index(
            "ix_busy_blocks_connection_group", ["connection_id", "external_group"], unique=False
        )
    _restore_sqlite_triggers()


def _recreate() -> Literal["always", "never"]:
    """SQLite needs the table copied to add a foreign key; PostgreSQL alters it in place
    (copying it there would drop the schedule-version trigger of 0005)."""
    return "always" if op.get_bind().dialect.name == "sqlite" else "never"


def _restore_sqlite_triggers() -> None:
    """SQLite's batch "move and copy" drops the table's triggers: put back those of 0005."""
    if op.get_bind().dialect.name != "sqlite":
        return
    bump = "UPDATE providers SET schedule_version = schedule_version + 1 WHERE id = {}.provider_id"
    for event, rows in (("INSERT", ("NEW",)), ("DELETE", ("OLD",)), ("UPDATE", ("OLD", "NEW"))):
        body = "; ".join(bump.format(row) for row in rows)
        op.execute(
            f"CREATE TRIGGER IF NOT EXISTS busy_blocks_schedule_version_{event.lower()} "
            f"AFTER {event} ON busy_blocks BEGIN {body}; END"
        )


def downgrade() -> None:
    op.execute("DELETE FROM busy_blocks WHERE connection_id IS NOT NULL")
    with op.batch_alter_table("busy_blocks", recreate=_recreate()) as batch_op:
        batch_op.drop_index("ix_busy_blocks_connection_group")
        batch_op.drop_constraint(FK_NAME, type_="foreignkey")
        batch_op.drop_column("external_group")
        batch_op.drop_column("connection_id")
    _restore_sqlite_triggers()
    op.drop_table("video_meetings")
    op.drop_table("calendar_exports")
    op.drop_table("calendar_connections")
    op.drop_table("calendar_oauth_requests")
    op.drop_table("calendar_accounts")
