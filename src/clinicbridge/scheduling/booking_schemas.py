"""Request and response bodies of ``/api/v1/bookings``."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clinicbridge.scheduling.bookings import MAX_HOLD_MINUTES

Id = Annotated[str, Field(min_length=1, max_length=64)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BookingPatient(_Input):
    """A patient described inline: matched to an existing record or created."""

    first_name: Annotated[str, Field(min_length=1, max_length=100)]
    last_name: Annotated[str, Field(min_length=1, max_length=100)]
    date_of_birth: date | None = None
    phone: Annotated[str | None, Field(max_length=40)] = None
    email: Annotated[str | None, Field(max_length=320)] = None


class BookingCreate(_Input):
    service_id: Id
    provider_id: Id = Field(description='A provider id, or "any".')
    start: datetime = Field(description="ISO 8601 with an offset, a start from /availability.")
    patient_id: Id | None = None
    patient: BookingPatient | None = None
    hold_minutes: Annotated[int | None, Field(ge=1, le=MAX_HOLD_MINUTES)] = Field(
        default=None, description="Hold the slot this long (e.g. while the patient pays)."
    )
    payment: Literal["none", "deposit", "full"] = Field(
        default="none", description="Take the service's deposit or price with Stripe first."
    )
    payment_method: Literal["card", "link"] = Field(
        default="card", description="card: a PaymentIntent for Stripe.js; link: a payment page."
    )

    @model_validator(mode="after")
    def _one_patient(self) -> BookingCreate:
        if (self.patient_id is None) == (self.patient is None):
            raise ValueError("give exactly one of patient_id and patient")
        return self


class BookingReschedule(_Input):
    start: datetime
    provider_id: Id | None = Field(default=None, description='Another provider, or "any".')


class BookingCancel(_Input):
    reason: Reason
    override_window: bool = Field(
        default=False, description="Cancel inside the service's cancellation window."
    )


class BookingOut(BaseModel):
    id: str
    status: str
    start: datetime
    end: datetime
    confirmation_code: str
    service_id: str
    provider_id: str
    patient_id: str
    location_id: str | None
    source: str
    hold_expires_at: datetime | None
    cancel_reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    # With "payment": the PaymentIntent (client_secret) or the payment link.
    payment: dict[str, object] | None = None


class BookingChangeOut(BaseModel):
    id: str
    action: str
    from_status: str | None
    to_status: str
    details: dict[str, object] | None
    actor_type: str
    actor_id: str
    at: datetime


BookingStatusFilter = Literal[
    "held", "pending_payment", "booked", "confirmed", "cancelled", "no_show", "completed", "expired"
]
