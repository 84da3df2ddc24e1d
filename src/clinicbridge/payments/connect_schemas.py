"""Request and response bodies of provider payouts (Connect) and front desk card
payments (Terminal). Amounts are integers in minor units; shares in basis points."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from clinicbridge.payments.connect import status_of
from clinicbridge.payments.connect_models import ConnectedAccount

Id = Annotated[str, Field(min_length=1, max_length=64)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class BalanceOut(BaseModel):
    available: int
    pending: int
    currency: str
    as_of: datetime


class PayoutAccountOut(BaseModel):
    id: str
    provider_id: str
    stripe_account_id: str
    status: str = Field(description="onboarding, active, or blocked (payouts held up)")
    charges_enabled: bool
    payouts_enabled: bool
    details_submitted: bool
    transfers_enabled: bool = Field(
        description="Stripe accepts transfers to the account (its transfers capability)"
    )
    requirements_currently_due: list[str]
    requirements_past_due: list[str]
    disabled_reason: str | None
    balance: BalanceOut | None
    updated_at: datetime

    @classmethod
    def of(cls, row: ConnectedAccount) -> PayoutAccountOut:
        balance = None
        if row.balance_at is not None and row.balance_currency:
            balance = BalanceOut(
                available=row.balance_available or 0,
                pending=row.balance_pending or 0,
                currency=row.balance_currency,
                as_of=row.balance_at,
            )
        return cls(
            id=row.id,
            provider_id=row.provider_id,
            stripe_account_id=row.stripe_account_id,
            status=status_of(row),
            charges_enabled=row.charges_enabled,
            payouts_enabled=row.payouts_enabled,
            details_submitted=row.details_submitted,
            transfers_enabled=row.transfers_active,
            requirements_currently_due=list(row.requirements_currently_due or []),
            requirements_past_due=list(row.requirements_past_due or []),
            disabled_reason=row.disabled_reason,
            balance=balance,
            updated_at=row.updated_at,
        )


class OnboardingOut(PayoutAccountOut):
    onboarding_url: str = Field(description="Stripe's onboarding page; single use, short lived")
    onboarding_expires_at: datetime | None


class PayoutRuleIn(_Input):
    provider_share_bps: Annotated[int, Field(ge=0, le=10_000)] | None = Field(
        default=None, description="The provider's share in basis points (7000 = 70 %)."
    )
    application_fee_amount: Annotated[int, Field(ge=0, le=10**12)] | None = Field(
        default=None, description="The clinic's fixed fee per payment; the provider gets the rest."
    )


class PayoutRuleOut(_Output):
    service_id: str
    provider_share_bps: int | None
    application_fee_amount: int | None
    updated_at: datetime


class TransferOut(_Output):
    id: str
    booking_id: str | None
    payment_id: str
    provider_id: str
    connected_account_id: str
    amount: int
    amount_reversed: int
    currency: str
    status: str
    stripe_transfer_id: str | None
    failure_code: str | None
    attempt: int = Field(description="1, then 2... each time a refused transfer is resent")
    created_at: datetime
    updated_at: datetime


class ConnectionTokenIn(_Input):
    location: Annotated[str, Field(min_length=1, max_length=255)] | None = None


class ConnectionTokenOut(BaseModel):
    secret: str
    location: str | None


class TerminalPaymentIn(_Input):
    patient_id: Id
    amount: Annotated[int, Field(gt=0, le=10**9)]
    booking_id: Id | None = None
    invoice_id: Id | None = None
