"""Tables owned by the payments package.

Money is integer minor units (cents) with a lower-case ISO 4217 currency, as Stripe
writes it (``4500`` + ``"cad"``); tax rates are exact decimals stored as text
(``"9.975"``), never floats.

The ledger is the one source of a patient's balance: immutable entries, summed when
asked (database triggers refuse UPDATE, and DELETE unless the patient is gone). Each
entry has a unique ``source_key`` naming what caused it (``stripe:pi:pi_...``,
``invoice:inv_...:charge``), so the same Stripe object or invoice never books twice.
Sign convention: positive = the patient owes the clinic more; negative = credit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.integrations import models as _integration_models  # noqa: F401  (FK target)
from clinicbridge.scheduling.models import Booking

LEDGER_KINDS = ("charge", "payment", "refund", "adjustment", "write_off")
INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
PAYMENT_STATUSES = ("creating", "requires_payment", "processing", "succeeded", "failed", "canceled")
OPEN_PAYMENT_STATUSES = ("creating", "requires_payment", "processing")
REFUND_STATUSES = (
    "pending_approval",  # above the clinic's threshold: a second person must approve
    "submitting",  # committed, being sent to Stripe (a retry reuses the idempotency key)
    "pending",  # Stripe accepted it, not settled yet
    "succeeded",
    "failed",
    "rejected",
    "canceled",
)
# Refunds that still count against what can be refunded.
OUTSTANDING_REFUNDS = ("pending_approval", "submitting", "pending", "succeeded")


def _tenant_fk() -> Any:
    return sa.ForeignKey("tenants.id", ondelete="CASCADE")


class BillingSettings(Base):
    """A clinic's billing choices; a clinic without a row gets the defaults."""

    __tablename__ = "billing_settings"

    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), primary_key=True)
    # Refunds above this amount (minor units) need a second person; None: never.
    refund_approval_threshold: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    default_tax_code: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    invoice_prefix: Mapped[str] = mapped_column(sa.String(16), default="INV")
    card_hold_minutes: Mapped[int] = mapped_column(sa.Integer, default=15)
    link_hold_minutes: Mapped[int] = mapped_column(sa.Integer, default=30)
    updated_by: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TaxRate(Base):
    """One tax of a tax code (``QC`` = GST 5 % + QST 9.975 %). Applied in ``priority``
    order; a compound rate is charged on the line plus the taxes before it."""

    __tablename__ = "tax_rates"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "tax_code", "name"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    tax_code: Mapped[str] = mapped_column(sa.String(32))
    name: Mapped[str] = mapped_column(sa.String(64))
    percent: Mapped[str] = mapped_column(sa.String(16))  # exact decimal, e.g. "9.975"
    compound: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    priority: Mapped[int] = mapped_column(sa.Integer, default=0)
    jurisdiction: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InvoiceCounter(Base):
    """The last invoice number given per clinic and year; locked by the finalizing
    transaction, so numbers have no gaps (a rolled-back finalize gives its number back)."""

    __tablename__ = "invoice_counters"

    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), primary_key=True)
    year: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    last_number: Mapped[int] = mapped_column(sa.Integer)


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "number"),
        sa.Index("ix_invoices_tenant_patient", "tenant_id", "patient_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    booking_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("bookings.id", ondelete="SET NULL"), nullable=True, index=True
    )
    number: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    currency: Mapped[str] = mapped_column(sa.String(3))
    subtotal: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    discount_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    tax_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    memo: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    uncollectible_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class InvoiceLine(Base):
    """A line: ``amount = quantity * unit_price - discount``; its taxes (frozen when the
    invoice is finalized) are ``[{"tax_rate_id", "name", "percent", "compound", "amount"}]``."""

    __tablename__ = "invoice_lines"
    __table_args__ = (sa.Index("ix_invoice_lines_invoice", "invoice_id", "position"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    service_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("services.id", ondelete="SET NULL"), nullable=True
    )
    description: Mapped[str] = mapped_column(sa.String(500))
    quantity: Mapped[int] = mapped_column(sa.Integer)
    unit_price: Mapped[int] = mapped_column(sa.BigInteger)
    discount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    tax_code: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    tax_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    taxes: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON)
    total: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Payment(Base):
    """One payment the patient makes through Stripe: a PaymentIntent (card, Stripe.js)
    or a Checkout Session (a link for SMS and voice). ``amount_refunded`` and
    ``disputed`` mirror the charge as Stripe last described it (they only grow)."""

    __tablename__ = "payments"
    __table_args__ = (
        sa.Index(
            "uq_payments_intent",
            "tenant_id",
            "stripe_payment_intent_id",
            unique=True,
            postgresql_where=sa.text("stripe_payment_intent_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_payment_intent_id IS NOT NULL"),
        ),
        sa.Index("ix_payments_tenant_patient", "tenant_id", "patient_id"),
        sa.Index("ix_payments_booking", "booking_id"),
        sa.Index("ix_payments_invoice", "invoice_id"),
        sa.Index("ix_payments_status_updated", "status", "updated_at"),
        sa.Index("ix_payments_session", "stripe_checkout_session_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    booking_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("bookings.id", ondelete="SET NULL"), nullable=True
    )
    invoice_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("invoices.id", ondelete="SET NULL"), nullable=True
    )
    integration_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="SET NULL"), nullable=True
    )
    purpose: Mapped[str] = mapped_column(sa.String(16))  # deposit, full, invoice
    method: Mapped[str] = mapped_column(sa.String(16))  # card, link
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(24))
    stripe_status: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    amount_received: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    disputed: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    stripe_checkout_session_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    stripe_charge_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    checkout_url: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(128))
    failure_code: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    failure_message: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    # Something staff must look at (e.g. paid after the slot was released).
    attention: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Refund(Base):
    """A refund asked for by staff; the ledger changes only when Stripe reports the
    charge refunded (``charge.refunded``), never on the request itself."""

    __tablename__ = "refunds"
    __table_args__ = (
        sa.Index(
            "uq_refunds_stripe",
            "tenant_id",
            "stripe_refund_id",
            unique=True,
            postgresql_where=sa.text("stripe_refund_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_refund_id IS NOT NULL"),
        ),
        sa.Index("ix_refunds_payment", "payment_id"),
        sa.Index("ix_refunds_tenant_status", "tenant_id", "status"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    payment_id: Mapped[str] = mapped_column(sa.ForeignKey("payments.id", ondelete="CASCADE"))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    reason: Mapped[str] = mapped_column(sa.String(500))
    status: Mapped[str] = mapped_column(sa.String(24))
    stripe_refund_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(128))
    requested_by: Mapped[str] = mapped_column(sa.String(64))
    approved_by: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rejected_by: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rejection_reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    failure_message: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LedgerEntry(Base):
    """One immutable movement on a patient's account (see the module docstring)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "source_key"),
        # Covers the balance: SUM(amount) reads the index alone (no table rows).
        sa.Index("ix_ledger_entries_balance", "tenant_id", "patient_id", "currency", "amount"),
        sa.Index("ix_ledger_entries_patient", "patient_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    description: Mapped[str] = mapped_column(sa.String(200))
    source_key: Mapped[str] = mapped_column(sa.String(200))
    invoice_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    payment_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    refund_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    booking_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UnmatchedStripeEvent(Base):
    """A verified Stripe event about an object ClinicBridge does not know (a payment
    made outside it, or for another system on the same account): kept and flagged for
    staff, never dropped."""

    __tablename__ = "unmatched_stripe_events"
    __table_args__ = (sa.UniqueConstraint("webhook_event_id"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    webhook_event_id: Mapped[str] = mapped_column(
        sa.ForeignKey("webhook_events.id", ondelete="CASCADE")
    )
    stripe_event_id: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[str] = mapped_column(sa.String(128))
    object_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    amount: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    currency: Mapped[str | None] = mapped_column(sa.String(3), nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16))  # unmatched, resolved
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class StripeObject(Base):
    """The last known state of a Stripe Billing object (``invoice``, ``subscription``)
    from its events; newer events (by ``created``) win, replays change nothing.
    Memberships (phase 2) build on these rows."""

    __tablename__ = "stripe_objects"
    __table_args__ = (sa.UniqueConstraint("integration_id", "stripe_id"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    object_type: Mapped[str] = mapped_column(sa.String(32))
    stripe_id: Mapped[str] = mapped_column(sa.String(255))
    status: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    customer: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    event_created: Mapped[int] = mapped_column(sa.BigInteger)
    last_event_id: Mapped[str] = mapped_column(sa.String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# Pending-payment holds expire like ``held`` ones; their own partial index keeps the
# expiry sweep an index lookup (the scheduling index covers status = 'held' only).
sa.Index(
    "ix_bookings_payment_hold_expiry",
    Booking.hold_expires_at,
    postgresql_where=sa.text("status = 'pending_payment'"),
    sqlite_where=sa.text("status = 'pending_payment'"),
)
