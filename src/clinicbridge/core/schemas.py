"""API shapes for clinics, staff users, roles and API keys.

Inputs forbid unknown fields so a typo is an error, not a silent no-op.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from clinicbridge.core.validation import check_currency, check_language, check_timezone

TimeZone = Annotated[str, AfterValidator(check_timezone)]
Language = Annotated[str, AfterValidator(check_language)]
Currency = Annotated[str, AfterValidator(check_currency)]
RoleName = Annotated[str, Field(min_length=2, max_length=64, pattern=r"^[a-z][a-z0-9_]+$")]
Password = Annotated[str, Field(min_length=12, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TenantOut(Output):
    id: str
    slug: str
    name: str
    timezone: str
    default_language: str
    currency: str
    webhook_body_retention_days: int
    calendar_patient_names: bool
    created_at: datetime
    updated_at: datetime


class TenantUpdate(Input):
    name: Name | None = None
    timezone: TimeZone | None = None
    default_language: Language | None = None
    currency: Currency | None = None
    # How long raw bodies of inbound webhooks are kept (the events themselves stay).
    webhook_body_retention_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    # Show patient names in providers' iCalendar feeds (off: service names only).
    calendar_patient_names: bool | None = None


class UserCreate(Input):
    email: EmailStr
    role: RoleName
    display_name: Annotated[str, Field(max_length=200)] = ""
    password: Password | None = None


class UserUpdate(Input):
    role: RoleName | None = None
    display_name: Annotated[str, Field(max_length=200)] | None = None
    is_active: bool | None = None
    password: Password | None = None


class UserOut(Output):
    id: str
    email: str
    display_name: str
    role: str
    is_active: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class UserCreated(UserOut):
    initial_password: str | None = Field(
        default=None, description="Only when no password was given; shown once."
    )


class ApiKeyCreate(Input):
    name: Name
    role: RoleName = "integration"


class ApiKeyUpdate(Input):
    name: Name


class ApiKeyOut(Output):
    id: str
    name: str
    role: str
    key_hint: str
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown once; store it now.")


class RoleCreate(Input):
    name: RoleName
    description: Annotated[str, Field(max_length=500)] = ""
    permissions: Annotated[list[str], Field(max_length=200)]


class RoleUpdate(Input):
    description: Annotated[str, Field(max_length=500)] | None = None
    permissions: Annotated[list[str], Field(max_length=200)] | None = None


class RoleOut(BaseModel):
    name: str
    description: str
    permissions: list[str]
    builtin: bool
