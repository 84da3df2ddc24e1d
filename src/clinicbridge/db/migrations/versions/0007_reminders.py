"""reminders: rules per clinic or service, and each booking's reminders

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:56:57.942830
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clinicbridge.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reminder_rules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=32), nullable=True),
        sa.Column("offsets", sa.JSON(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("quiet_start", sa.Integer(), nullable=False),
        sa.Column("quiet_end", sa.Integer(), nullable=False),
        sa.Column("min_lead_minutes", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_reminder_rules_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_reminder_rules_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder_rules")),
    )
    with op.batch_alter_table("reminder_rules", schema=None) as batch_op:
        batch_op.create_index(
            "uq_reminder_rules_default",
            ["tenant_id"],
            unique=True,
            postgresql_where=sa.text("service_id IS NULL"),
            sqlite_where=sa.text("service_id IS NULL"),
        )
        batch_op.create_index("uq_reminder_rules_service", ["tenant_id", "service_id"], unique=True)

    op.create_table(
        "booking_reminders",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.String(length=32), nullable=False),
        sa.Column("offset_minutes", sa.Integer(), nullable=False),
        sa.Column("starts_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["bookings.id"],
            name=op.f("fk_booking_reminders_booking_id_bookings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_booking_reminders_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_reminders")),
    )
    with op.batch_alter_table("booking_reminders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_booking_reminders_tenant_due", ["tenant_id", "due_at"], unique=False
        )
        batch_op.create_index(
            "uq_booking_reminders_offset", ["booking_id", "offset_minutes"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("booking_reminders", schema=None) as batch_op:
        batch_op.drop_index("uq_booking_reminders_offset")
        batch_op.drop_index("ix_booking_reminders_tenant_due")

    op.drop_table("booking_reminders")
    with op.batch_alter_table("reminder_rules", schema=None) as batch_op:
        batch_op.drop_index("uq_reminder_rules_service")
        batch_op.drop_index(
            "uq_reminder_rules_default",
            postgresql_where=sa.text("service_id IS NULL"),
            sqlite_where=sa.text("service_id IS NULL"),
        )

    op.drop_table("reminder_rules")
