"""Web push subscriptions: the browsers and installed apps of a patient that accept
push messages from the clinic (the W3C Push API's ``PushSubscription``).

The endpoint is a capability URL at the browser vendor's push service; it is kept
with its SHA-256 so one endpoint is stored once per clinic. A push service answering
404 or 410 means the subscription is gone: it is marked expired, never used again.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.patients import models as _patient_models  # noqa: F401  (FK target)


class PushSubscription(Base):
    __tablename__ = "push_subscriptions"
    __table_args__ = (
        sa.Index("uq_push_subscriptions_endpoint", "tenant_id", "endpoint_sha256", unique=True),
        sa.Index("ix_push_subscriptions_patient", "tenant_id", "patient_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(sa.String(2048))
    endpoint_sha256: Mapped[str] = mapped_column(sa.String(64))
    p256dh: Mapped[str] = mapped_column(sa.String(128))  # the browser's public key, base64url
    auth: Mapped[str] = mapped_column(sa.String(64))  # the browser's auth secret, base64url
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
