"""memberships: membership plans, Stripe customers of patients, patient memberships

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10 10:00:00

Plans are a clinic's Stripe Product + recurring Price; a membership is a patient's
Stripe Subscription (its state converged from ``customer.subscription.*`` events).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clinicbridge.db.base

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "membership_plans",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("stripe_product_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_price_id", sa.String(length=255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_membership_plans_integration_id_integrations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_membership_plans_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_membership_plans")),
    )
    with op.batch_alter_table("membership_plans", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_membership_plans_stripe_price_id"), ["stripe_price_id"], unique=False
        )
        batch_op.create_index("ix_membership_plans_tenant", ["tenant_id", "active"], unique=False)

    op.create_table(
        "stripe_customers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_stripe_customers_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_stripe_customers_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_stripe_customers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_customers")),
        sa.UniqueConstraint(
            "integration_id",
            "patient_id",
            name=op.f("uq_stripe_customers_integration_id_patient_id"),
        ),
    )
    with op.batch_alter_table("stripe_customers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_customers_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "memberships",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("plan_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_item_id", sa.String(length=255), nullable=True),
        sa.Column(
            "current_period_start", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "current_period_end", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("trial_end", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("latest_invoice_id", sa.String(length=255), nullable=True),
        sa.Column("state_key", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_memberships_integration_id_integrations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_memberships_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["membership_plans.id"],
            name=op.f("fk_memberships_plan_id_membership_plans"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_memberships_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index(
            "ix_memberships_tenant_patient", ["tenant_id", "patient_id"], unique=False
        )
        batch_op.create_index(
            "uq_memberships_subscription",
            ["tenant_id", "stripe_subscription_id"],
            unique=True,
            postgresql_where=sa.text("stripe_subscription_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_subscription_id IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_memberships_subscription",
            postgresql_where=sa.text("stripe_subscription_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_subscription_id IS NOT NULL"),
        )
        batch_op.drop_index("ix_memberships_tenant_patient")

    op.drop_table("memberships")
    with op.batch_alter_table("stripe_customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_customers_tenant_id"))

    op.drop_table("stripe_customers")
    with op.batch_alter_table("membership_plans", schema=None) as batch_op:
        batch_op.drop_index("ix_membership_plans_tenant")
        batch_op.drop_index(batch_op.f("ix_membership_plans_stripe_price_id"))

    op.drop_table("membership_plans")
