"""Tables owned by the worker."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime


class WorkerHeartbeat(Base):
    """One row per live worker; ``/readyz`` checks that one is fresh."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
