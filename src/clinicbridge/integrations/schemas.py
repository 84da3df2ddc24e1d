"""API shapes for connectors and integrations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class IntegrationCreate(Input):
    connector: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    credentials: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class IntegrationUpdate(Input):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    enabled: bool | None = None
    # Replaces only the fields given; a field set to null is removed.
    credentials: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None


class SecretRotation(Input):
    # For providers that issue the secret (Stripe): the new one. Otherwise generated.
    webhook_secret: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class LastTest(BaseModel):
    at: datetime | None
    ok: bool | None
    error: str | None


class IntegrationOut(BaseModel):
    id: str
    connector: str
    name: str
    enabled: bool
    status: str
    webhook_url: str | None
    credentials_set: bool
    credential_hints: dict[str, str | None]
    settings: dict[str, Any]
    last_test: LastTest
    created_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime


class IntegrationCreated(IntegrationOut):
    webhook_secret: str | None = Field(
        default=None, description="Only when ClinicBridge generated it; shown once."
    )


class TestOut(BaseModel):
    ok: bool
    message: str
    status: str
    tested_at: datetime


class RotationOut(BaseModel):
    webhook_secret: str | None = Field(default=None, description="Generated secret; shown once.")
    previous_valid_until: datetime | None
