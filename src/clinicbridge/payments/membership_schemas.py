"""Request and response bodies of the memberships API (amounts in minor units,
currencies lower-case ISO 4217, as Stripe writes them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(min_length=1, max_length=64)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PlanCreate(_Input):
    name: Annotated[str, Field(min_length=1, max_length=120)]
    description: Annotated[str, Field(max_length=500)] | None = None
    # Checked > 0 by the service, so the error names the field the same way everywhere.
    amount: Annotated[int, Field(ge=-(10**12), le=10**12)] = Field(
        description="Per interval, in minor units (4500 = 45.00)."
    )
    currency: Annotated[str, Field(min_length=3, max_length=3)] | None = Field(
        default=None, description="Defaults to the currency of the clinic's Stripe account."
    )
    interval: Annotated[str, Field(max_length=8)] = Field(description='"month" or "year".')
    trial_days: int = 0


class PlanUpdate(_Input):
    active: bool


class PlanOut(_Output):
    id: str
    name: str
    description: str | None
    amount: int
    currency: str
    interval: str
    trial_days: int
    active: bool
    stripe_product_id: str | None
    stripe_price_id: str | None
    created_at: datetime
    updated_at: datetime


class MembershipCreate(_Input):
    plan_id: Id


class ChangePlan(_Input):
    plan_id: Id


class CancelMembership(_Input):
    at_period_end: bool = True


class MembershipOut(_Output):
    id: str
    patient_id: str
    plan_id: str
    status: str
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    trial_end: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    stripe_subscription_id: str | None
    latest_invoice_id: str | None
    created_at: datetime
    updated_at: datetime
    client_secret: str | None = Field(
        default=None,
        description="On joining without a trial: confirm the first invoice with Stripe.js.",
    )
