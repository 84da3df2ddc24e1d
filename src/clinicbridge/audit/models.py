"""Tables owned by the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime


class AuditEvent(Base):
    """An append-only, hash-chained record (database triggers refuse UPDATE and DELETE).

    ``tenant_id`` is "" for platform events. No foreign key: the record outlives
    what it describes.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "seq"),
        sa.Index("ix_audit_events_tenant_time", "tenant_id", "occurred_at"),
        sa.Index("ix_audit_events_tenant_resource", "tenant_id", "resource_type", "resource_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.String(32))
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_type: Mapped[str] = mapped_column(sa.String(16))
    actor_id: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64))
    resource_type: Mapped[str] = mapped_column(sa.String(64))
    resource_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    ip: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    phi: Mapped[bool] = mapped_column(sa.Boolean)
    diff: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class AuditChainHead(Base):
    """The last link of each clinic's chain; its row lock serialises appends."""

    __tablename__ = "audit_chain_heads"

    tenant_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    hash: Mapped[str] = mapped_column(sa.String(64))
