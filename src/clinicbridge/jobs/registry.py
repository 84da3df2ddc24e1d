"""Job handlers by kind, and periodic tasks; domain packages register theirs here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from croniter import croniter

from clinicbridge.db.engine import Database
from clinicbridge.jobs.retry import Backoff, exponential_full_jitter
from clinicbridge.settings import Settings


@dataclass(frozen=True)
class JobContext:
    """What a handler gets: the job, its attempt number, and the database."""

    job_id: str
    kind: str
    tenant_id: str | None
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    db: Database
    now: Callable[[], datetime]
    settings: Settings | None = None  # for handlers that need configuration (the vault)


class Handler(Protocol):
    """Must be idempotent: a job can run again after a crash or a lost lease."""

    def __call__(self, job: JobContext) -> None: ...


@dataclass(frozen=True)
class Registration:
    kind: str
    handler: Handler
    max_attempts: int | None
    backoff: Backoff


@dataclass(frozen=True)
class PeriodicTask:
    """Enqueue ``kind`` at every tick of a cron expression (UTC), once per tick
    across all workers; with ``per_tenant``, once per clinic per tick."""

    name: str
    cron: str
    kind: str
    per_tenant: bool = False
    queue: str = "default"
    payload: dict[str, Any] = field(default_factory=dict)

    def previous_tick(self, now: datetime) -> datetime:
        return croniter(self.cron, now).get_prev(datetime)  # type: ignore[no-any-return]

    def next_tick(self, after: datetime) -> datetime:
        return croniter(self.cron, after).get_next(datetime)  # type: ignore[no-any-return]


class JobRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Registration] = {}
        self._periodic: dict[str, PeriodicTask] = {}

    def register(
        self,
        kind: str,
        handler: Handler,
        *,
        max_attempts: int | None = None,
        backoff: Backoff = exponential_full_jitter,
    ) -> None:
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind!r} is already registered")
        self._handlers[kind] = Registration(kind, handler, max_attempts, backoff)

    def handler(
        self,
        kind: str,
        *,
        max_attempts: int | None = None,
        backoff: Backoff = exponential_full_jitter,
    ) -> Callable[[Handler], Handler]:
        """Decorator form of ``register``."""

        def decorate(fn: Handler) -> Handler:
            self.register(kind, fn, max_attempts=max_attempts, backoff=backoff)
            return fn

        return decorate

    def periodic(self, task: PeriodicTask) -> None:
        if not croniter.is_valid(task.cron):
            raise ValueError(f"invalid cron expression {task.cron!r} for {task.name!r}")
        if task.name in self._periodic:
            raise ValueError(f"a periodic task named {task.name!r} is already registered")
        self._periodic[task.name] = task

    def get(self, kind: str) -> Registration | None:
        return self._handlers.get(kind)

    @property
    def periodic_tasks(self) -> list[PeriodicTask]:
        return list(self._periodic.values())

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)


# The application's registry: domain packages register into it at import time.
registry = JobRegistry()
