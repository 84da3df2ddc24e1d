"""Reuse of computed availability while nothing that shapes it has changed.

A search's answer depends on the clinic's timezone (to read dates without an
offset), the service's providers and everything that database triggers count in
``providers.schedule_version`` (their claims, busy blocks, hours, exceptions,
timezone and active flag, and the rules of the services they give; see migration
0005), and on the time: notice and the
past move with the clock. The cache key holds all of it: one small query reads
the stamp, and the clock counts in buckets of ``NOW_BUCKET_S`` seconds, so an
answer is at most that old with respect to the clock, and never with respect to
the schedule. Each process has its own cache; the stamp comes from the database,
so processes never disagree.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from datetime import datetime

import sqlalchemy as sa

from clinicbridge.core.models import Tenant
from clinicbridge.scheduling.models import Provider, Service, ServiceProvider

NOW_BUCKET_S = 15
MAX_ENTRIES = 512
MAX_BYTES = 32 * 1024 * 1024

_P = sa.bindparam
_STAMP = (
    sa.select(Tenant.timezone, Provider.id, Provider.schedule_version)
    .select_from(Service)
    .join(Tenant, Tenant.id == Service.tenant_id)
    .outerjoin(ServiceProvider, ServiceProvider.service_id == Service.id)
    .outerjoin(Provider, Provider.id == ServiceProvider.provider_id)
    .where(Service.tenant_id == _P("tenant_id"), Service.id == _P("service_id"))
    .order_by(Provider.id)
)


def stamp(conn: sa.Connection, tenant_id: str, service_id: str) -> Hashable | None:
    """What a search of this service depends on in the database; None for an unknown
    service (its error is not cached)."""
    rows = conn.execute(_STAMP, {"tenant_id": tenant_id, "service_id": service_id}).all()
    return tuple(tuple(row) for row in rows) or None


def clock_bucket(now: datetime) -> int:
    return int(now.timestamp()) // NOW_BUCKET_S


class SlotCache:
    """A bounded LRU of answers (bytes) by key; thread-safe."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes // 8:
            return  # one huge answer would push out everything else
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += len(value)
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)
