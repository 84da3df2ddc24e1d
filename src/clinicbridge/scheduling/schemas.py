"""API shapes for scheduling configuration and availability.

Times of day are ``"HH:MM"`` in the provider's timezone (``"24:00"`` may end a day);
instants are ISO-8601 with an offset. Stored as minutes after midnight and UTC.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)

from clinicbridge.core.validation import check_currency, check_timezone

_HHMM = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")


def minutes_of(value: str) -> int:
    """``"09:30"`` → 570; ``"24:00"`` → 1440."""
    match = _HHMM.match(value)
    if not match:
        raise ValueError("must be a time of day as HH:MM, e.g. 09:30")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > 1440:
        raise ValueError("must be 24:00 or earlier")
    return minutes


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _check_hhmm(value: str) -> str:
    minutes_of(value)
    return value


TimeOfDay = Annotated[str, AfterValidator(_check_hhmm)]
Timezone = Annotated[str, AfterValidator(check_timezone)]
Currency = Annotated[str, AfterValidator(check_currency)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=32)]
Modality = Literal["in_person", "video"]
Minutes = Annotated[int, Field(ge=0, le=10_080)]  # up to a week


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- locations -------------------------------------------------------------------------


class LocationCreate(Input):
    name: Name
    timezone: Timezone
    address: dict[str, Any] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    is_active: bool = True


class LocationUpdate(Input):
    name: Name | None = None
    timezone: Timezone | None = None
    address: dict[str, Any] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    is_active: bool | None = None


class LocationOut(Output):
    id: str
    name: str
    timezone: str
    address: dict[str, Any] | None
    phone: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime


# --- providers -------------------------------------------------------------------------


class ProviderCreate(Input):
    display_name: Name
    timezone: Timezone
    email: EmailStr | None = None
    is_active: bool = True


class ProviderUpdate(Input):
    display_name: Name | None = None
    timezone: Timezone | None = None
    email: EmailStr | None = None
    is_active: bool | None = None


class ProviderOut(Output):
    id: str
    display_name: str
    email: str | None
    timezone: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


# --- working hours, exceptions, busy blocks ------------------------------------------------


class HoursInterval(Input):
    weekday: Annotated[int, Field(ge=0, le=6, description="0 = Monday")]
    start: TimeOfDay
    end: TimeOfDay
    location_id: Id

    @model_validator(mode="after")
    def _ordered(self) -> HoursInterval:
        if minutes_of(self.start) >= minutes_of(self.end):
            raise ValueError("start must be before end")
        return self


class HoursIn(Input):
    intervals: Annotated[list[HoursInterval], Field(max_length=100)]


class HoursOut(BaseModel):
    data: list[HoursInterval]


class ExceptionCreate(Input):
    date: date
    kind: Literal["time_off", "extra_hours"]
    start: TimeOfDay | None = None
    end: TimeOfDay | None = None
    location_id: Id | None = None
    reason: Reason | None = None

    @model_validator(mode="after")
    def _shape(self) -> ExceptionCreate:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither (the whole day)")
        if self.start is not None and self.end is not None:
            if minutes_of(self.start) >= minutes_of(self.end):
                raise ValueError("start must be before end")
        elif self.kind == "extra_hours":
            raise ValueError("extra_hours needs start and end")
        return self


class ExceptionOut(BaseModel):
    id: str
    provider_id: str
    date: date
    kind: str
    start: str | None
    end: str | None
    location_id: str | None
    reason: str | None
    created_at: datetime


class BusyBlockCreate(Input):
    start: AwareDatetime
    end: AwareDatetime
    reason: Reason | None = None

    @model_validator(mode="after")
    def _ordered(self) -> BusyBlockCreate:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class BusyBlockOut(BaseModel):
    id: str
    provider_id: str
    start: datetime
    end: datetime
    source: str
    external_id: str | None
    reason: str | None
    created_at: datetime


# --- services ----------------------------------------------------------------------------


class ServiceCreate(Input):
    name: Name
    description: Annotated[str, Field(max_length=5000)] | None = None
    duration_minutes: Annotated[int, Field(ge=1, le=1440)]
    buffer_before_minutes: Annotated[int, Field(ge=0, le=1440)] = 0
    buffer_after_minutes: Annotated[int, Field(ge=0, le=1440)] = 0
    slot_interval_minutes: Annotated[int, Field(ge=1, le=1440)] | None = Field(
        default=None, description="Defaults to the duration."
    )
    min_notice_minutes: Minutes = 0
    max_advance_days: Annotated[int, Field(ge=0, le=730)] = 90
    cancellation_window_minutes: Minutes = 0
    capacity: Annotated[int, Field(ge=1, le=1000)] = 1
    price_minor: Annotated[int, Field(ge=0)] | None = None
    currency: Currency | None = None
    deposit_minor: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description='Asked for by "payment": "deposit" at booking.'
    )
    modality: Modality = "in_person"
    is_public: bool = True
    is_active: bool = True
    provider_ids: Annotated[list[Id], Field(max_length=500)] = Field(
        default_factory=list, description="Providers who give this service."
    )

    @model_validator(mode="after")
    def _price(self) -> ServiceCreate:
        if self.price_minor is not None and self.currency is None:
            raise ValueError("a price needs a currency")
        return self


class ServiceUpdate(Input):
    name: Name | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    duration_minutes: Annotated[int, Field(ge=1, le=1440)] | None = None
    buffer_before_minutes: Annotated[int, Field(ge=0, le=1440)] | None = None
    buffer_after_minutes: Annotated[int, Field(ge=0, le=1440)] | None = None
    slot_interval_minutes: Annotated[int, Field(ge=1, le=1440)] | None = None
    min_notice_minutes: Minutes | None = None
    max_advance_days: Annotated[int, Field(ge=0, le=730)] | None = None
    cancellation_window_minutes: Minutes | None = None
    capacity: Annotated[int, Field(ge=1, le=1000)] | None = None
    price_minor: Annotated[int, Field(ge=0)] | None = None
    currency: Currency | None = None
    deposit_minor: Annotated[int, Field(ge=1)] | None = None
    modality: Modality | None = None
    is_public: bool | None = None
    is_active: bool | None = None
    provider_ids: Annotated[list[Id], Field(max_length=500)] | None = None


class ServiceOut(Output):
    id: str
    name: str
    description: str | None
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    slot_interval_minutes: int
    min_notice_minutes: int
    max_advance_days: int
    cancellation_window_minutes: int
    capacity: int
    price_minor: int | None
    currency: str | None
    deposit_minor: int | None = None
    modality: str
    is_public: bool
    is_active: bool
    provider_ids: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


# --- availability --------------------------------------------------------------------------


class SlotOut(BaseModel):
    start: datetime
    end: datetime
    provider_id: str
    seats_left: int


class AvailabilityOut(BaseModel):
    data: list[SlotOut]
