"""provider payouts (Stripe Connect): connected accounts, service payout rules, transfers

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clinicbridge.db.base

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, clinicbridge.db.base.UTCDateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "connected_accounts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=True),
        sa.Column("stripe_account_id", sa.String(length=255), nullable=False),
        sa.Column("charges_enabled", sa.Boolean(), nullable=False),
        sa.Column("payouts_enabled", sa.Boolean(), nullable=False),
        sa.Column("details_submitted", sa.Boolean(), nullable=False),
        sa.Column("requirements_currently_due", sa.JSON(), nullable=False),
        sa.Column("requirements_past_due", sa.JSON(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=255), nullable=True),
        sa.Column("balance_available", sa.BigInteger(), nullable=True),
        sa.Column("balance_pending", sa.BigInteger(), nullable=True),
        sa.Column("balance_currency", sa.String(length=3), nullable=True),
        _ts("balance_at", nullable=True),
        sa.Column("stripe_event_created", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("connected_accounts", "integration_id", "integrations", "SET NULL"),
        _fk("connected_accounts", "provider_id", "providers"),
        _fk("connected_accounts", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connected_accounts")),
        sa.UniqueConstraint(
            "tenant_id", "provider_id", name=op.f("uq_connected_accounts_tenant_id_provider_id")
        ),
        sa.UniqueConstraint(
            "tenant_id",
            "stripe_account_id",
            name=op.f("uq_connected_accounts_tenant_id_stripe_account_id"),
        ),
    )
    op.create_table(
        "service_payout_rules",
        sa.Column("service_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("provider_share_bps", sa.Integer(), nullable=True),
        sa.Column("application_fee_amount", sa.BigInteger(), nullable=True),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        _ts("updated_at"),
        sa.CheckConstraint(
            "(provider_share_bps IS NULL) <> (application_fee_amount IS NULL)",
            name=op.f("ck_service_payout_rules_one_rule"),
        ),
        _fk("service_payout_rules", "service_id", "services"),
        _fk("service_payout_rules", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("service_id", name=op.f("pk_service_payout_rules")),
    )
    with op.batch_alter_table("service_payout_rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_service_payout_rules_tenant_id"), ["tenant_id"], unique=False
        )
    op.create_table(
        "transfers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.String(length=32), nullable=True),
        sa.Column("payment_id", sa.String(length=32), nullable=False),
        sa.Column("connected_account_id", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("amount_reversed", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stripe_transfer_id", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("transfers", "booking_id", "bookings", "SET NULL"),
        _fk("transfers", "connected_account_id", "connected_accounts"),
        _fk("transfers", "payment_id", "payments"),
        _fk("transfers", "tenant_id", "tenants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_transfers_payment_id")),
    )
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.create_index("ix_transfers_account", ["connected_account_id"], unique=False)
        batch_op.create_index(
            "ix_transfers_tenant_booking", ["tenant_id", "booking_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("transfers")
    with op.batch_alter_table("service_payout_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_payout_rules_tenant_id"))
    op.drop_table("service_payout_rules")
    op.drop_table("connected_accounts")
