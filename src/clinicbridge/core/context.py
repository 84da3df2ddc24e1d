"""``Ctx``: who is acting, for which clinic, in which request, and when.

``now`` is taken once per request so every row a request writes agrees on the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ActorType = Literal["user", "api_key", "system", "integration"]


@dataclass(frozen=True)
class Ctx:
    tenant_id: str
    actor_type: ActorType
    actor_id: str
    role: str
    permissions: frozenset[str]
    now: datetime
    request_id: str | None = None
    ip: str | None = None

    def has(self, permission: str) -> bool:
        return permission in self.permissions

    @classmethod
    def system(
        cls,
        tenant_id: str,
        actor_id: str,
        now: datetime,
        *,
        role: str = "system",
        permissions: frozenset[str] = frozenset(),
        request_id: str | None = None,
        ip: str | None = None,
    ) -> Ctx:
        """ClinicBridge acting for a clinic by itself (a job, a public page, the CLI)."""
        return cls(tenant_id, "system", actor_id, role, permissions, now, request_id, ip)
