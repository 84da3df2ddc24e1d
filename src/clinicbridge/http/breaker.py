"""Circuit breaker per (clinic, integration).

closed ──N consecutive failures──► open ──cool-down elapsed──► half_open
  ▲                                 ▲                              │
  └──────── trial call succeeds ────┼──────────────────────────────┤
                                    └────── trial call fails ──────┘

While open, calls fail fast with ``CircuitOpenError`` (``retry_after`` = the
remaining cool-down, ``consumes_attempt`` False). Half-open lets exactly one trial
call through; others fail fast until it ends.

State lives in the process (a ``BreakerRegistry``, by default one per process):
each API or worker process learns about an outage by itself, after N failures of
its own. That is cheap and good enough: the breaker protects the provider and our
threads, while the rate limit, which must hold across processes, is in the database.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from clinicbridge.core.clock import SystemClock

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    cooldown: float = 30.0  # seconds

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cooldown <= 0:
            raise ValueError("cooldown must be positive")


class CircuitBreaker:
    """One breaker. Thread-safe; time is passed in so a fake clock drives it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: datetime | None = None
        self._trial_running = False

    def state(self, now: datetime) -> BreakerState:
        with self._lock:
            return self._state(now)

    def _state(self, now: datetime) -> BreakerState:
        if self._open_until is None:
            return "closed"
        return "open" if now < self._open_until else "half_open"

    def acquire(self, now: datetime) -> float | None:
        """Ask to make one call: None means go ahead, a number is the seconds to wait.

        A go-ahead in half-open state is the trial; its caller must end it with
        ``record_success``, ``record_failure`` or ``release``.
        """
        with self._lock:
            if self._open_until is None:
                return None
            if now < self._open_until:
                return (self._open_until - now).total_seconds()
            if self._trial_running:
                return 1.0  # the trial's outcome decides soon; check back shortly
            self._trial_running = True
            return None

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = None
            self._trial_running = False

    def record_failure(self, now: datetime, policy: BreakerPolicy) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= policy.failure_threshold:
                self._open_until = now + timedelta(seconds=policy.cooldown)
            self._trial_running = False

    def release(self) -> None:
        """Give back a trial that never reached the provider (e.g. rate limited)."""
        with self._lock:
            self._trial_running = False


class BreakerRegistry:
    """The breakers of one process, keyed by (tenant_id, integration)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[tuple[str | None, str], CircuitBreaker] = {}

    def get(self, tenant_id: str | None, integration: str) -> CircuitBreaker:
        key = (tenant_id, integration)
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = self._breakers[key] = CircuitBreaker()
            return breaker

    def state(self, tenant_id: str | None, integration: str, now: datetime) -> BreakerState:
        with self._lock:
            breaker = self._breakers.get((tenant_id, integration))
        return "closed" if breaker is None else breaker.state(now)


default_registry = BreakerRegistry()


def breaker_state(
    tenant_id: str | None,
    integration: str,
    *,
    now: datetime | None = None,
    registry: BreakerRegistry | None = None,
) -> BreakerState:
    """This process's view of the (clinic, integration) breaker, for the health view."""
    reg = default_registry if registry is None else registry
    return reg.state(tenant_id, integration, SystemClock().now() if now is None else now)
