"""API shapes of the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clinicbridge.core.schemas import Output


class AuditEventOut(Output):
    id: str
    seq: int
    occurred_at: datetime
    actor_type: str
    actor_id: str
    action: str
    resource_type: str
    resource_id: str | None
    request_id: str | None
    ip: str | None
    outcome: str
    phi: bool
    diff: dict[str, Any] | None
    prev_hash: str
    hash: str
