"""payments: ledger (append-only), tax rates, invoices, payments, refunds, Stripe objects

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 11:01:21.986743
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clinicbridge.db.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_settings",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("refund_approval_threshold", sa.Integer(), nullable=True),
        sa.Column("default_tax_code", sa.String(length=32), nullable=True),
        sa.Column("invoice_prefix", sa.String(length=16), nullable=False),
        sa.Column("card_hold_minutes", sa.Integer(), nullable=False),
        sa.Column("link_hold_minutes", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_billing_settings_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_billing_settings")),
    )
    op.create_table(
        "invoice_counters",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_invoice_counters_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "year", name=op.f("pk_invoice_counters")),
    )
    op.create_table(
        "tax_rates",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("tax_code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("percent", sa.String(length=16), nullable=False),
        sa.Column("compound", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("jurisdiction", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tax_rates_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_rates")),
        sa.UniqueConstraint(
            "tenant_id", "tax_code", "name", name=op.f("uq_tax_rates_tenant_id_tax_code_name")
        ),
    )
    with op.batch_alter_table("tax_rates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tax_rates_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("source_key", sa.String(length=200), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=True),
        sa.Column("payment_id", sa.String(length=32), nullable=True),
        sa.Column("refund_id", sa.String(length=32), nullable=True),
        sa.Column("booking_id", sa.String(length=32), nullable=True),
        sa.Column("occurred_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_ledger_entries_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ledger_entries_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint(
            "tenant_id", "source_key", name=op.f("uq_ledger_entries_tenant_id_source_key")
        ),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_balance",
            ["tenant_id", "patient_id", "currency", "amount"],
            unique=False,
        )
        batch_op.create_index("ix_ledger_entries_patient", ["patient_id", "id"], unique=False)

    op.create_table(
        "stripe_objects",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("stripe_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("customer", sa.String(length=255), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("event_created", sa.BigInteger(), nullable=False),
        sa.Column("last_event_id", sa.String(length=255), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_stripe_objects_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_stripe_objects_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_objects")),
        sa.UniqueConstraint(
            "integration_id", "stripe_id", name=op.f("uq_stripe_objects_integration_id_stripe_id")
        ),
    )
    with op.batch_alter_table("stripe_objects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_objects_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "unmatched_stripe_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("webhook_event_id", sa.String(length=32), nullable=False),
        sa.Column("stripe_event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_unmatched_stripe_events_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_unmatched_stripe_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["webhook_event_id"],
            ["webhook_events.id"],
            name=op.f("fk_unmatched_stripe_events_webhook_event_id_webhook_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unmatched_stripe_events")),
        sa.UniqueConstraint(
            "webhook_event_id", name=op.f("uq_unmatched_stripe_events_webhook_event_id")
        ),
    )
    with op.batch_alter_table("unmatched_stripe_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_unmatched_stripe_events_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.String(length=32), nullable=True),
        sa.Column("number", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("discount_total", sa.BigInteger(), nullable=False),
        sa.Column("tax_total", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("memo", sa.String(length=1000), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("paid_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("voided_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "uncollectible_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["bookings.id"],
            name=op.f("fk_invoices_booking_id_bookings"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_invoices_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_invoices_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("tenant_id", "number", name=op.f("uq_invoices_tenant_id_number")),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoices_booking_id"), ["booking_id"], unique=False)
        batch_op.create_index(
            "ix_invoices_tenant_patient", ["tenant_id", "patient_id"], unique=False
        )

    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.String(length=32), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("tax_code", sa.String(length=32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("tax_amount", sa.BigInteger(), nullable=False),
        sa.Column("taxes", sa.JSON(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_lines_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_invoice_lines_service_id_services"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_invoice_lines_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_lines_invoice", ["invoice_id", "position"], unique=False)

    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.String(length=32), nullable=True),
        sa.Column("invoice_id", sa.String(length=32), nullable=True),
        sa.Column("integration_id", sa.String(length=32), nullable=True),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("stripe_status", sa.String(length=32), nullable=True),
        sa.Column("amount_received", sa.BigInteger(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("disputed", sa.Boolean(), nullable=False),
        sa.Column("stripe_payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_checkout_session_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_charge_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("expires_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("attention", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("succeeded_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["bookings.id"],
            name=op.f("fk_payments_booking_id_bookings"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_payments_integration_id_integrations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_payments_invoice_id_invoices"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_payments_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_payments_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index("ix_payments_booking", ["booking_id"], unique=False)
        batch_op.create_index("ix_payments_invoice", ["invoice_id"], unique=False)
        batch_op.create_index("ix_payments_session", ["stripe_checkout_session_id"], unique=False)
        batch_op.create_index("ix_payments_status_updated", ["status", "updated_at"], unique=False)
        batch_op.create_index(
            "ix_payments_tenant_patient", ["tenant_id", "patient_id"], unique=False
        )
        batch_op.create_index(
            "uq_payments_intent",
            ["tenant_id", "stripe_payment_intent_id"],
            unique=True,
            postgresql_where=sa.text("stripe_payment_intent_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_payment_intent_id IS NOT NULL"),
        )

    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("stripe_refund_id", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("approved_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("rejected_by", sa.String(length=64), nullable=True),
        sa.Column("rejected_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("rejection_reason", sa.String(length=500), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("created_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", clinicbridge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_refunds_payment_id_payments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_refunds_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index("ix_refunds_payment", ["payment_id"], unique=False)
        batch_op.create_index("ix_refunds_tenant_status", ["tenant_id", "status"], unique=False)
        batch_op.create_index(
            "uq_refunds_stripe",
            ["tenant_id", "stripe_refund_id"],
            unique=True,
            postgresql_where=sa.text("stripe_refund_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_refund_id IS NOT NULL"),
        )

    # Not in batch mode: on SQLite that could rebuild the tables and lose their triggers.
    op.create_index(
        "ix_bookings_payment_hold_expiry",
        "bookings",
        ["hold_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending_payment'"),
        sqlite_where=sa.text("status = 'pending_payment'"),
    )
    op.add_column("services", sa.Column("deposit_minor", sa.Integer(), nullable=True))
    _ledger_append_only()


LEDGER_GUARD_MESSAGE = "ledger entries are immutable"


def _ledger_append_only() -> None:
    """Ledger entries are never changed nor deleted, except with their patient (cascade)."""
    patient_exists = "EXISTS (SELECT 1 FROM patients WHERE id = OLD.patient_id)"
    if op.get_bind().dialect.name == "sqlite":
        raise_guard = f"BEGIN SELECT RAISE(ABORT, '{LEDGER_GUARD_MESSAGE}'); END"
        op.execute(
            f"CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries {raise_guard}"
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries "
            f"WHEN {patient_exists} {raise_guard}"
        )
        return
    op.execute(
        "CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF TG_OP = 'DELETE' AND NOT {patient_exists} THEN RETURN OLD; END IF; "
        f"RAISE EXCEPTION '{LEDGER_GUARD_MESSAGE}'; END $$"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
    )
    op.execute(
        "CREATE FUNCTION ledger_entries_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{LEDGER_GUARD_MESSAGE}'; END $$"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_no_truncate()"
    )


def _drop_ledger_guards() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_update")
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_delete")
        return
    op.execute("DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries")
    op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_truncate ON ledger_entries")
    op.execute("DROP FUNCTION IF EXISTS ledger_entries_append_only()")
    op.execute("DROP FUNCTION IF EXISTS ledger_entries_no_truncate()")


def downgrade() -> None:
    _drop_ledger_guards()
    op.drop_column("services", "deposit_minor")
    op.drop_index(
        "ix_bookings_payment_hold_expiry",
        table_name="bookings",
        postgresql_where=sa.text("status = 'pending_payment'"),
        sqlite_where=sa.text("status = 'pending_payment'"),
    )

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_refunds_stripe",
            postgresql_where=sa.text("stripe_refund_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_refund_id IS NOT NULL"),
        )
        batch_op.drop_index("ix_refunds_tenant_status")
        batch_op.drop_index("ix_refunds_payment")

    op.drop_table("refunds")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_payments_intent",
            postgresql_where=sa.text("stripe_payment_intent_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_payment_intent_id IS NOT NULL"),
        )
        batch_op.drop_index("ix_payments_tenant_patient")
        batch_op.drop_index("ix_payments_status_updated")
        batch_op.drop_index("ix_payments_session")
        batch_op.drop_index("ix_payments_invoice")
        batch_op.drop_index("ix_payments_booking")

    op.drop_table("payments")
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_lines_invoice")

    op.drop_table("invoice_lines")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_tenant_patient")
        batch_op.drop_index(batch_op.f("ix_invoices_booking_id"))

    op.drop_table("invoices")
    with op.batch_alter_table("unmatched_stripe_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_unmatched_stripe_events_tenant_id"))

    op.drop_table("unmatched_stripe_events")
    with op.batch_alter_table("stripe_objects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_objects_tenant_id"))

    op.drop_table("stripe_objects")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_patient")
        batch_op.drop_index("ix_ledger_entries_balance")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("tax_rates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tax_rates_tenant_id"))

    op.drop_table("tax_rates")
    op.drop_table("invoice_counters")
    op.drop_table("billing_settings")
