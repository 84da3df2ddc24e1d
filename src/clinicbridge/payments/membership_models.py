"""Tables of memberships: a clinic's plans (a Stripe Product + recurring Price each), the
Stripe Customer of a patient, and a patient's membership (a Stripe Subscription).

A membership's state is Stripe's subscription as last seen: ``state_key`` orders what
was applied (see ``memberships_events``) so a stale or replayed event never overwrites
newer state. Money is integer minor units with a lower-case currency, as elsewhere.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.integrations import models as _integration_models  # noqa: F401  (FK target)
from clinicbridge.patients import models as _patient_models  # noqa: F401  (FK target)

INTERVALS = ("month", "year")
# Stripe's subscription statuses, plus ``creating`` (ours: not at Stripe yet).
MEMBERSHIP_STATUSES = (
    "creating",
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "paused",
    "canceled",
)
# A patient has at most one of these per plan.
LIVE_STATUSES = ("creating", "incomplete", "trialing", "active", "past_due", "unpaid", "paused")
ENDED_STATUSES = ("canceled", "incomplete_expired")


def _tenant_fk() -> Any:
    return sa.ForeignKey("tenants.id", ondelete="CASCADE")


class MembershipPlan(Base):
    """What a clinic sells by the month or year; deactivated, never deleted."""

    __tablename__ = "membership_plans"
    __table_args__ = (sa.Index("ix_membership_plans_tenant", "tenant_id", "active"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    integration_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="SET NULL"), nullable=True
    )
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    interval: Mapped[str] = mapped_column(sa.String(8))
    trial_days: Mapped[int] = mapped_column(sa.Integer, default=0)
    stripe_product_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    stripe_price_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True, index=True)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StripeCustomer(Base):
    """The Stripe Customer of a patient on one Stripe integration (made once, reused)."""

    __tablename__ = "stripe_customers"
    __table_args__ = (sa.UniqueConstraint("integration_id", "patient_id"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    stripe_customer_id: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Membership(Base):
    """A patient's plan, billed by a Stripe Subscription."""

    __tablename__ = "memberships"
    __table_args__ = (
        sa.Index(
            "uq_memberships_subscription",
            "tenant_id",
            "stripe_subscription_id",
            unique=True,
            postgresql_where=sa.text("stripe_subscription_id IS NOT NULL"),
            sqlite_where=sa.text("stripe_subscription_id IS NOT NULL"),
        ),
        sa.Index("ix_memberships_tenant_patient", "tenant_id", "patient_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    plan_id: Mapped[str] = mapped_column(sa.ForeignKey("membership_plans.id", ondelete="CASCADE"))
    integration_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[str] = mapped_column(sa.String(24))
    stripe_customer_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    stripe_item_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_at_period_end: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    trial_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    latest_invoice_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    # The order key of the subscription state applied last (see memberships_events).
    state_key: Mapped[list[int]] = mapped_column(sa.JSON)
    idempotency_key: Mapped[str] = mapped_column(sa.String(128))
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
