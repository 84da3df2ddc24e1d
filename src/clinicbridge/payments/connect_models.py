"""Tables of provider payouts (Stripe Connect): a practitioner's connected account, how
a service's price is split between the clinic and its provider, and the transfers made
to providers after their appointments.

Money is integer minor units with a lower-case ISO 4217 currency, as in ``models``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.payments import models as _payment_models  # noqa: F401  (FK targets)

TRANSFER_STATUSES = ("submitting", "paid", "failed", "reversed")


def _tenant_fk() -> Any:
    return sa.ForeignKey("tenants.id", ondelete="CASCADE")


class ConnectedAccount(Base):
    """A provider's (practitioner's) Stripe Express account, as Stripe last described
    it (``account.updated``, or a refresh), with a snapshot of its balance."""

    __tablename__ = "connected_accounts"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "provider_id"),
        sa.UniqueConstraint("tenant_id", "stripe_account_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    provider_id: Mapped[str] = mapped_column(sa.ForeignKey("providers.id", ondelete="CASCADE"))
    integration_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="SET NULL"), nullable=True
    )
    stripe_account_id: Mapped[str] = mapped_column(sa.String(255))
    charges_enabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    payouts_enabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    details_submitted: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # The ``transfers`` capability is active: Stripe accepts transfers to the account.
    # Set False again when Stripe refuses a transfer for the account's state, so that
    # the account becoming able again (a recovery) is seen and refused transfers resent.
    transfers_active: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    requirements_currently_due: Mapped[list[str]] = mapped_column(sa.JSON)
    requirements_past_due: Mapped[list[str]] = mapped_column(sa.JSON)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    balance_available: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    balance_pending: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    balance_currency: Mapped[str | None] = mapped_column(sa.String(3), nullable=True)
    balance_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stripe_event_created: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ServicePayoutRule(Base):
    """How a service's payments are split: the provider's share in basis points
    (``7000`` = 70 %), or a fixed clinic fee per payment (the provider gets the rest).
    A service without a rule pays its providers nothing through Connect."""

    __tablename__ = "service_payout_rules"
    __table_args__ = (
        sa.CheckConstraint(
            "(provider_share_bps IS NULL) <> (application_fee_amount IS NULL)", name="one_rule"
        ),
    )

    service_id: Mapped[str] = mapped_column(
        sa.ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    provider_share_bps: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    application_fee_amount: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    updated_by: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Transfer(Base):
    """The provider's share of one payment, sent to their connected account after the
    appointment was completed. One per payment (the unique ``payment_id``), with an
    idempotency key from our ids, so it is made exactly once."""

    __tablename__ = "transfers"
    __table_args__ = (
        sa.UniqueConstraint("payment_id"),
        sa.Index("ix_transfers_tenant_booking", "tenant_id", "booking_id"),
        sa.Index("ix_transfers_account", "connected_account_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    booking_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("bookings.id", ondelete="SET NULL"), nullable=True
    )
    payment_id: Mapped[str] = mapped_column(sa.ForeignKey("payments.id", ondelete="CASCADE"))
    connected_account_id: Mapped[str] = mapped_column(
        sa.ForeignKey("connected_accounts.id", ondelete="CASCADE")
    )
    provider_id: Mapped[str] = mapped_column(sa.String(32))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    # Taken back from the provider after the payment was refunded (transfer reversals).
    amount_reversed: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(16))
    stripe_transfer_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    # Attempt n is sent with ``cb:{payment_id}:tr:v{n}``: the same key for every try of
    # one attempt (exactly once), a new one when a refused transfer is resent.
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1, server_default=sa.text("1"))
    idempotency_key: Mapped[str] = mapped_column(sa.String(128))
    failure_code: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
