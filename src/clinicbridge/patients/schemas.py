"""API shapes of patients, notes and consents.

Phones are accepted in any usual format and answered in E.164: reading a national
number needs the clinic's country, so the service (not the schema) normalizes them
and names the field when one is not a phone number.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, EmailStr, Field, PastDate, field_validator

from clinicbridge.core.schemas import Input, Language, Output

Channel = Literal["sms", "email", "whatsapp", "voice", "push"]
IdentifierSystem = Literal["mrn", "pms", "fhir"]
Sex = Literal["female", "male", "other", "unknown"]
PersonName = Annotated[str, Field(min_length=1, max_length=100)]
OLDEST_BIRTH_DATE = date(1900, 1, 1)


def _plausible_birth_date(value: date) -> date:
    if value < OLDEST_BIRTH_DATE:
        raise ValueError("must be on or after 1900-01-01")
    return value


# PastDate: a date of birth in the future is refused with the field named.
BirthDate = Annotated[PastDate, AfterValidator(_plausible_birth_date)]
RawPhone = Annotated[str, Field(min_length=3, max_length=40)]


class Address(Input):
    line1: Annotated[str, Field(max_length=200)] | None = None
    line2: Annotated[str, Field(max_length=200)] | None = None
    city: Annotated[str, Field(max_length=100)] | None = None
    region: Annotated[str, Field(max_length=100)] | None = None
    postal_code: Annotated[str, Field(max_length=20)] | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None


class PhoneIn(Input):
    number: RawPhone
    label: Annotated[str, Field(max_length=32)] | None = None


class IdentifierIn(Input):
    system: IdentifierSystem
    value: Annotated[str, Field(min_length=1, max_length=128)]


def _unique_systems(value: list[IdentifierIn] | None) -> list[IdentifierIn] | None:
    if value is not None and len({i.system for i in value}) != len(value):
        raise ValueError("at most one identifier per system")
    return value


Identifiers = Annotated[list[IdentifierIn], Field(max_length=3)]


class PatientCreate(Input):
    first_name: PersonName
    last_name: PersonName
    date_of_birth: BirthDate | None = None
    sex: Sex | None = None
    preferred_language: Language | None = None
    address: Address | None = None
    phones: Annotated[list[PhoneIn], Field(max_length=5)] = []
    emails: Annotated[list[EmailStr], Field(max_length=5)] = []
    identifiers: Identifiers = []
    # Shorthands for the common case of one phone / one e-mail (listed first: primary).
    phone: RawPhone | None = None
    email: EmailStr | None = None

    _systems = field_validator("identifiers")(_unique_systems)

    def all_phones(self) -> list[tuple[str, PhoneIn]]:
        """Every phone with the name of its field (for errors); the shorthand first."""
        first = [("phone", PhoneIn(number=self.phone))] if self.phone else []
        return first + [(f"phones.{i}.number", p) for i, p in enumerate(self.phones)]

    def all_emails(self) -> list[tuple[str, str]]:
        first = [("email", str(self.email))] if self.email else []
        return first + [(f"emails.{i}", str(e)) for i, e in enumerate(self.emails)]


class PatientUpdate(Input):
    """Only the fields present change; ``phones``/``emails``/``identifiers`` replace the lists."""

    first_name: PersonName | None = None
    last_name: PersonName | None = None
    date_of_birth: BirthDate | None = None
    sex: Sex | None = None
    preferred_language: Language | None = None
    address: Address | None = None
    phones: Annotated[list[PhoneIn], Field(max_length=5)] | None = None
    emails: Annotated[list[EmailStr], Field(max_length=5)] | None = None
    identifiers: Identifiers | None = None

    _systems = field_validator("identifiers")(_unique_systems)


class ContactOut(Output):
    value: str
    label: str | None
    is_primary: bool


class PatientOut(Output):
    id: str
    first_name: str
    last_name: str
    date_of_birth: date | None
    sex: str | None
    preferred_language: str | None
    address: dict[str, Any] | None
    phones: list[ContactOut] = []
    emails: list[ContactOut] = []
    identifiers: dict[str, str] = {}
    created_at: datetime
    updated_at: datetime


class DuplicateCandidate(Output):
    id: str
    first_name: str
    last_name: str
    date_of_birth: date | None


class NoteCreate(Input):
    body: Annotated[str, Field(min_length=1, max_length=20_000)]


class NoteOut(Output):
    id: str
    patient_id: str
    author_type: str
    author_id: str
    body: str
    created_at: datetime


class ConsentIn(Input):
    channel: Channel
    granted: bool
    source: Annotated[str, Field(min_length=1, max_length=64)]


class ConsentsUpdate(Input):
    consents: Annotated[list[ConsentIn], Field(min_length=1, max_length=10)]

    @field_validator("consents")
    @classmethod
    def _one_per_channel(cls, value: list[ConsentIn]) -> list[ConsentIn]:
        if len({c.channel for c in value}) != len(value):
            raise ValueError("each channel at most once")
        return value


class ConsentOut(Output):
    channel: str
    granted: bool
    source: str
    recorded_by: str
    recorded_at: datetime


class DataSharingIn(Input):
    integration_id: Annotated[str, Field(min_length=1, max_length=32)]
    granted: bool


class DataSharingOut(Output):
    integration_id: str
    granted: bool
    recorded_by: str
    recorded_at: datetime


class ConsentsOut(Output):
    """Current state per channel (``null``: never recorded) and per integration, with history."""

    channels: dict[str, ConsentOut | None]
    channel_history: list[ConsentOut]
    data_sharing: dict[str, DataSharingOut]
    data_sharing_history: list[DataSharingOut]
