"""messages: every message to a patient and its status timeline

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:50:30.602920
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clinicbridge.db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=True),
        sa.Column("booking_id", sa.String(length=32), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=35), nullable=True),
        sa.Column("to_address", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.String(length=500), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("attachments", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("cost_minor", sa.Integer(), nullable=True),
        sa.Column("cost_currency", sa.String(length=3), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column(
            "send_started_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("sent_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_messages_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_messages_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_patient", ["patient_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_messages_tenant_created", ["tenant_id", "created_at"], unique=False
        )
        batch_op.create_index("uq_messages_dedupe", ["tenant_id", "dedupe_key"], unique=True)
        batch_op.create_index(
            "uq_messages_provider_id",
            ["provider", "provider_message_id"],
            unique=True,
            postgresql_where=sa.text("provider_message_id IS NOT NULL"),
            sqlite_where=sa.text("provider_message_id IS NOT NULL"),
        )

    op.create_table(
        "message_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_message_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_events")),
    )
    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.create_index("ix_message_events_message", ["message_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.drop_index("ix_message_events_message")

    op.drop_table("message_events")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_messages_provider_id",
            postgresql_where=sa.text("provider_message_id IS NOT NULL"),
            sqlite_where=sa.text("provider_message_id IS NOT NULL"),
        )
        batch_op.drop_index("uq_messages_dedupe")
        batch_op.drop_index("ix_messages_tenant_created")
        batch_op.drop_index("ix_messages_patient")

    op.drop_table("messages")
