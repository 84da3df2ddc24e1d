"""API shapes for outbound webhook endpoints and their deliveries.

Deliveries are listed without their payload: an event may carry patient data,
and the list is for seeing whether and when a clinic's system answered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from clinicbridge.core.secrets import Secret
from clinicbridge.webhooks.signing import InvalidSecretError, secret_key

# "booking.created", "booking.*" (that prefix) or "*" (everything).
EventPattern = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$",
    ),
]
Url = Annotated[str, Field(min_length=1, max_length=2048)]
Description = Annotated[str, Field(max_length=500)]


def _check_secret(value: Secret) -> Secret:
    try:
        secret_key(value)
    except InvalidSecretError as exc:
        raise ValueError(str(exc)) from None
    return value


WebhookSecret = Annotated[Secret, AfterValidator(_check_secret)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class EndpointCreate(Input):
    url: Url
    event_types: Annotated[list[EventPattern], Field(min_length=1, max_length=100)]
    description: Description = ""
    enabled: bool = True
    secret: WebhookSecret | None = Field(
        default=None, description="whsec_<base64>; generated when absent."
    )


class EndpointUpdate(Input):
    url: Url | None = None
    event_types: Annotated[list[EventPattern], Field(min_length=1, max_length=100)] | None = None
    description: Description | None = None
    enabled: bool | None = None


class EndpointOut(Output):
    id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="The signing secret (whsec_...): shown once, here only.")


class AttemptOut(Output):
    id: str
    attempted_at: datetime
    status_code: int | None
    duration_ms: float
    success: bool
    error: str | None


class DeliveryOut(Output):
    id: str
    endpoint_id: str
    message_id: str = Field(description="The webhook-id header: the same on every retry.")
    event_type: str
    status: str = Field(description="pending, retrying, delivered, dead or cancelled")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptOut] = Field(default_factory=list)
