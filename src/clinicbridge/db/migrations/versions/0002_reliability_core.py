"""reliability core: jobs, vault, audit, outbound http

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 03:34:08.395016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clinicbridge.db.base

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_chain_heads",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_audit_chain_heads")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("phi", sa.Boolean(), nullable=False),
        sa.Column("diff", sa.JSON(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("tenant_id", "seq", name=op.f("uq_audit_events_tenant_id_seq")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_events_tenant_resource",
            ["tenant_id", "resource_type", "resource_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_audit_events_tenant_time", ["tenant_id", "occurred_at"], unique=False
        )

    op.create_table(
        "http_calls",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=True),
        sa.Column("integration", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("error_class", sa.String(length=128), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_http_calls")),
    )
    with op.batch_alter_table("http_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_http_calls_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            "ix_http_calls_integration_time", ["integration", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_http_calls_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "periodic_ticks",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("tick", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("name", "tenant_id", "tick", name=op.f("pk_periodic_ticks")),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_buckets")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=True),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=True),
        sa.Column("locked_by", sa.String(length=32), nullable=True),
        sa.Column("locked_until", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_jobs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_due",
            ["queue", "run_at"],
            unique=False,
            postgresql_where=sa.text("state IN ('pending', 'failed')"),
            sqlite_where=sa.text("state IN ('pending', 'failed')"),
        )
        batch_op.create_index(
            "ix_jobs_leases",
            ["locked_until"],
            unique=False,
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
        batch_op.create_index("ix_jobs_state_kind", ["state", "kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(
            "uq_jobs_active_dedupe_key",
            ["dedupe_key"],
            unique=True,
            postgresql_where=sa.text("state IN ('pending', 'running', 'failed')"),
            sqlite_where=sa.text("state IN ('pending', 'running', 'failed')"),
        )

    op.create_table(
        "vault_data_keys",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("master_version", sa.Integer(), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rewrapped_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_vault_data_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_vault_data_keys")),
    )
    with op.batch_alter_table("vault_data_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vault_data_keys_master_version"), ["master_version"], unique=False
        )

    _audit_append_only_triggers()


AUDIT_GUARD_MESSAGE = "audit events are append-only"


def _audit_append_only_triggers() -> None:
    """Refuse UPDATE and DELETE on audit_events, whoever asks."""
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
                f"BEGIN SELECT RAISE(ABORT, '{AUDIT_GUARD_MESSAGE}'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{AUDIT_GUARD_MESSAGE}'; END $$"
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def _drop_audit_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        return
    op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")


def downgrade() -> None:
    _drop_audit_triggers()
    with op.batch_alter_table("vault_data_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vault_data_keys_master_version"))

    op.drop_table("vault_data_keys")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_jobs_active_dedupe_key",
            postgresql_where=sa.text("state IN ('pending', 'running', 'failed')"),
            sqlite_where=sa.text("state IN ('pending', 'running', 'failed')"),
        )
        batch_op.drop_index(batch_op.f("ix_jobs_tenant_id"))
        batch_op.drop_index("ix_jobs_state_kind")
        batch_op.drop_index(
            "ix_jobs_leases",
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
        batch_op.drop_index(
            "ix_jobs_due",
            postgresql_where=sa.text("state IN ('pending', 'failed')"),
            sqlite_where=sa.text("state IN ('pending', 'failed')"),
        )

    op.drop_table("jobs")
    op.drop_table("rate_buckets")
    op.drop_table("periodic_ticks")
    with op.batch_alter_table("http_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_http_calls_tenant_id"))
        batch_op.drop_index("ix_http_calls_integration_time")
        batch_op.drop_index(batch_op.f("ix_http_calls_created_at"))

    op.drop_table("http_calls")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_tenant_time")
        batch_op.drop_index("ix_audit_events_tenant_resource")

    op.drop_table("audit_events")
    op.drop_table("audit_chain_heads")
