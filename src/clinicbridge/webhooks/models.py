"""Tables owned by the webhooks package: the inbound inbox and outbound deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.integrations import models as _integration_models  # noqa: F401  (FK target)


class WebhookEvent(Base):
    """A verified inbound event, stored once per (integration, provider event id).

    ``raw_body`` is purged after the clinic's retention; the normalized event and
    its processing record stay (and keep deduplicating late retries).
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        sa.UniqueConstraint("integration_id", "provider_event_id"),
        sa.Index("ix_webhook_events_tenant_received", "tenant_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    provider_event_id: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[str] = mapped_column(sa.String(128))
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(sa.String(16))
    headers: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    raw_body: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    job_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookEndpoint(Base):
    """A clinic system subscribed to ClinicBridge events (Standard Webhooks deliveries)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(sa.String(2048))
    description: Mapped[str] = mapped_column(sa.String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(sa.JSON)
    secret: Mapped[str] = mapped_column(sa.Text)  # vault ciphertext of whsec_...
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event for one endpoint; retried with backoff until delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "message_id"),
        sa.Index("ix_webhook_deliveries_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[str] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(sa.String(64))  # the webhook-id header: stable
    event_type: Mapped[str] = mapped_column(sa.String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookDeliveryAttempt(Base):
    """Each try of a delivery: when, how long, what came back."""

    __tablename__ = "webhook_delivery_attempts"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    duration_ms: Mapped[float] = mapped_column(sa.Float)
    success: Mapped[bool] = mapped_column(sa.Boolean)
    error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
