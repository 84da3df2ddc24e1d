"""Tables owned by the vault."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime


class DataKey(Base):
    """A clinic's data key, wrapped (AES-256-GCM) by one version of the master key."""

    __tablename__ = "vault_data_keys"

    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(sa.LargeBinary)
    master_version: Mapped[int] = mapped_column(sa.Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rewrapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
