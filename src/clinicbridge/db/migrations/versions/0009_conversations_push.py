"""conversations, staff tasks, web push subscriptions, WhatsApp content templates

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clinicbridge.db.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, clinicbridge.db.base.UTCDateTime(timezone=True), nullable=nullable)


def _fks(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f(f"fk_{table}_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f(f"fk_{table}_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=True),
        sa.Column("from_address", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("provider_message_id", sa.String(length=255), nullable=False),
        sa.Column("handled_as", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.String(length=32), nullable=True),
        _when("received_at"),
        _when("read_at", nullable=True),
        sa.Column("read_by", sa.String(length=64), nullable=True),
        *_fks("inbound_messages"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
    )
    op.create_index(
        "ix_inbound_messages_patient",
        "inbound_messages",
        ["tenant_id", "patient_id", "received_at"],
    )
    op.create_index(
        "ix_inbound_messages_unread", "inbound_messages", ["tenant_id", "read_at", "received_at"]
    )
    op.create_index(
        "uq_inbound_messages_provider_id",
        "inbound_messages",
        ["integration_id", "provider_message_id"],
        unique=True,
    )
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("endpoint_sha256", sa.String(length=64), nullable=False),
        sa.Column("p256dh", sa.String(length=128), nullable=False),
        sa.Column("auth", sa.String(length=64), nullable=False),
        _when("expires_at", nullable=True),
        _when("expired_at", nullable=True),
        _when("last_success_at", nullable=True),
        _when("created_at"),
        _when("updated_at"),
        *_fks("push_subscriptions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
    )
    op.create_index(
        "ix_push_subscriptions_patient",
        "push_subscriptions",
        ["tenant_id", "patient_id", "created_at"],
    )
    op.create_index(
        "uq_push_subscriptions_endpoint",
        "push_subscriptions",
        ["tenant_id", "endpoint_sha256"],
        unique=True,
    )
    op.create_table(
        "staff_tasks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=True),
        sa.Column("booking_id", sa.String(length=32), nullable=True),
        sa.Column("source_type", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("resolution", sa.String(length=500), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        _when("resolved_at", nullable=True),
        _when("created_at"),
        _when("updated_at"),
        *_fks("staff_tasks"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_tasks")),
    )
    op.create_index(
        "ix_staff_tasks_tenant_status", "staff_tasks", ["tenant_id", "status", "created_at"]
    )
    op.create_index(
        "uq_staff_tasks_source",
        "staff_tasks",
        ["tenant_id", "source_type", "source_id"],
        unique=True,
    )
    with op.batch_alter_table("message_templates") as batch:
        batch.add_column(sa.Column("provider_template_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("provider_template_variables", sa.JSON(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("provider_template", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("provider_template")
    with op.batch_alter_table("message_templates") as batch:
        batch.drop_column("provider_template_variables")
        batch.drop_column("provider_template_id")
    op.drop_table("staff_tasks")
    op.drop_table("push_subscriptions")
    op.drop_table("inbound_messages")
