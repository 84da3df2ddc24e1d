"""Staff tasks: things a person at the clinic has to do, raised by ClinicBridge itself.

A patient texting "R" to reschedule is a task; so will be anything else that needs a
human (a refund to approve, a calendar conflict to settle). A task names its source
(``source_type``/``source_id``, unique per clinic), so the job that raises it can run
twice and still leave one task.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.patients import models as _patient_models  # noqa: F401  (FK target)

TASK_STATUSES = ("open", "done", "dismissed")


class StaffTask(Base):
    __tablename__ = "staff_tasks"
    __table_args__ = (
        sa.Index("ix_staff_tasks_tenant_status", "tenant_id", "status", "created_at"),
        sa.Index("uq_staff_tasks_source", "tenant_id", "source_type", "source_id", unique=True),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(64))  # e.g. booking.reschedule_request
    status: Mapped[str] = mapped_column(sa.String(16))
    title: Mapped[str] = mapped_column(sa.String(200))  # no patient data: shown in lists
    patient_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=True
    )
    booking_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    source_type: Mapped[str] = mapped_column(sa.String(32))
    source_id: Mapped[str] = mapped_column(sa.String(64))
    resolution: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
