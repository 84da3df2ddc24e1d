"""Request and response bodies of the payments API. Amounts are integers in minor units;
currencies lower-case ISO 4217 (``"cad"``), as Stripe writes them; tax percentages are
decimal strings (``"9.975"``), never JSON numbers, so nothing is rounded on the way in."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(min_length=1, max_length=64)]
TaxCode = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Percent = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^\d{1,3}(\.\d+)?$")]
Minor = Annotated[int, Field(ge=0, le=10**12)]
Positive = Annotated[int, Field(ge=-(10**12), le=10**12)]  # checked > 0 by the service
Reason = Annotated[str, Field(min_length=1, max_length=500)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- tax rates ---------------------------------------------------------------------------


class TaxRateCreate(_Input):
    tax_code: TaxCode = Field(description='Lines with this code pay this tax, e.g. "QC".')
    name: Annotated[str, Field(min_length=1, max_length=64)]
    percent: Percent = Field(description='An exact decimal, e.g. "9.975".')
    compound: bool = Field(default=False, description="Charged on the line plus earlier taxes.")
    priority: Annotated[int, Field(ge=0, le=100)] = 0
    jurisdiction: Annotated[str, Field(max_length=64)] | None = None
    active: bool = True


class TaxRateUpdate(_Input):
    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    percent: Percent | None = None
    compound: bool | None = None
    priority: Annotated[int, Field(ge=0, le=100)] | None = None
    active: bool | None = None


class TaxRateOut(_Output):
    id: str
    tax_code: str
    name: str
    percent: str
    compound: bool
    priority: int
    jurisdiction: str | None
    active: bool
    created_at: datetime
    updated_at: datetime


# --- invoices ----------------------------------------------------------------------------


class InvoiceLineIn(_Input):
    service_id: Id | None = None
    description: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        default=None, description="Defaults to the service's name."
    )
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    unit_price: Minor | None = Field(default=None, description="Defaults to the service's price.")
    discount: Minor = Field(default=0, description="Off this line, in minor units.")
    tax_code: TaxCode | None = Field(
        default=None, description='Defaults to the clinic\'s default tax code; "exempt": none.'
    )


class InvoiceCreate(_Input):
    patient_id: Id
    booking_id: Id | None = None
    memo: Annotated[str, Field(max_length=1000)] | None = None
    lines: Annotated[list[InvoiceLineIn], Field(max_length=200)] = Field(default_factory=list)


class InvoiceLineOut(_Output):
    id: str
    position: int
    service_id: str | None
    description: str
    quantity: int
    unit_price: int
    discount: int
    tax_code: str | None
    amount: int
    tax_amount: int
    taxes: list[dict[str, Any]]
    total: int


class InvoiceOut(BaseModel):
    id: str
    number: str | None
    status: str
    patient_id: str
    booking_id: str | None
    currency: str
    subtotal: int
    discount_total: int
    tax_total: int
    total: int
    amount_paid: int
    amount_due: int
    memo: str | None
    lines: list[InvoiceLineOut]
    created_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    uncollectible_at: datetime | None


InvoiceStatus = Literal["draft", "open", "paid", "void", "uncollectible"]


# --- balance and ledger ------------------------------------------------------------------


class BalanceOut(BaseModel):
    balance: int = Field(description="Minor units; positive: the patient owes the clinic.")
    currency: str


class LedgerEntryOut(_Output):
    id: str
    kind: str
    amount: int
    currency: str
    description: str
    invoice_id: str | None
    payment_id: str | None
    refund_id: str | None
    booking_id: str | None
    occurred_at: datetime
    created_at: datetime


# --- billing settings --------------------------------------------------------------------


class BillingSettingsUpdate(_Input):
    refund_approval_threshold: Minor | None = None
    default_tax_code: TaxCode | None = None
    invoice_prefix: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$")] | (
        None
    ) = None
    card_hold_minutes: Annotated[int, Field(ge=5, le=60)] | None = None
    link_hold_minutes: Annotated[int, Field(ge=30, le=60)] | None = None


class BillingSettingsOut(_Output):
    refund_approval_threshold: int | None
    default_tax_code: str | None
    invoice_prefix: str
    card_hold_minutes: int
    link_hold_minutes: int


# --- payments and refunds ----------------------------------------------------------------


class PaymentOut(_Output):
    id: str
    status: str
    purpose: str
    method: str
    amount: int
    amount_received: int
    amount_refunded: int
    currency: str
    disputed: bool
    patient_id: str
    booking_id: str | None
    invoice_id: str | None
    stripe_payment_intent_id: str | None
    stripe_checkout_session_id: str | None
    checkout_url: str | None
    expires_at: datetime | None
    failure_code: str | None
    failure_message: str | None
    attention: str | None
    created_at: datetime
    succeeded_at: datetime | None


class BookingPaymentOut(BaseModel):
    """The ``payment`` object of a booking made with payment."""

    id: str
    status: str
    amount: int
    currency: str
    method: str
    stripe_payment_intent_id: str | None
    client_secret: str | None = Field(
        default=None, description="For Stripe.js; only in the answer that created it."
    )
    checkout_url: str | None = None
    expires_at: datetime | None = None


class PayIn(_Input):
    payment_method: Literal["card", "link"] = "card"


class RefundCreate(_Input):
    payment_id: Id
    amount: Positive
    reason: Reason
    currency: Annotated[str, Field(min_length=3, max_length=3)] | None = Field(
        default=None, description="If given, must be the payment's currency."
    )


class RefundReject(_Input):
    reason: Reason


class RefundOut(_Output):
    id: str
    payment_id: str
    amount: int
    currency: str
    reason: str
    status: str
    stripe_refund_id: str | None
    requested_by: str
    approved_by: str | None
    approved_at: datetime | None
    rejected_by: str | None
    rejected_at: datetime | None
    rejection_reason: str | None
    failure_message: str | None
    created_at: datetime
    updated_at: datetime


class UnmatchedOut(_Output):
    id: str
    integration_id: str
    webhook_event_id: str
    stripe_event_id: str
    type: str
    object_id: str | None
    amount: int | None
    currency: str | None
    status: str
    created_at: datetime
