"""Token bucket per (clinic, integration), shared by every process through the database.

A bucket holds at most ``burst`` tokens and gains ``rate`` tokens a second; each
request to the provider (every attempt, retries included) takes one.

One acquire is one atomic ``UPDATE ... RETURNING`` that refills the bucket for the
time elapsed and takes a token. A caller willing to wait ``max_wait`` seconds may
take a token that does not exist yet: the bucket goes below zero (a reservation
queue) and the caller sleeps until its token is due. Requests thus leave in the
order they asked, whichever process they come from, and no caller polls. When the
wait would be longer than ``max_wait`` nothing is taken and ``RateLimitedError``
says when to come back.

PostgreSQL locks the row for the UPDATE and re-evaluates it on the newest version;
on SQLite write transactions begin IMMEDIATE, so acquires are serialised there too.
Time comes from the callers' clocks; a clock behind the stored ``updated_at`` adds
no tokens and never moves it backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from clinicbridge.db.base import UTCDateTime
from clinicbridge.db.engine import Database


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests a second on average, ``burst`` at once; wait up to ``max_wait``."""

    rate: float
    burst: int
    max_wait: float = 5.0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.max_wait < 0:
            raise ValueError("max_wait must not be negative")


class RateLimitExceeded(Exception):  # internal signal; the client raises RateLimitedError
    """No token within the caller's wait; ``retry_after`` is when one is free."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"no token for {retry_after:.3f} s")
        self.retry_after = retry_after


def bucket_key(tenant_id: str | None, integration: str) -> str:
    return f"{tenant_id or '-'}:{integration}"


# -- SQL -------------------------------------------------------------------
# Seconds since the row's updated_at, never negative (clock skew adds nothing).
_ELAPSED = {
    "postgresql": "GREATEST(0, EXTRACT(EPOCH FROM (CAST(:now AS timestamptz) - updated_at)))",
    # SQLite's date functions count whole milliseconds; rounding to them undoes
    # the float error of julianday() (tens of microseconds at today's dates).
    "sqlite": "MAX(0, ROUND((julianday(:now) - julianday(updated_at)) * 86400000.0) / 1000.0)",
}
# Float rounding must not refuse a token that is due; a millionth of one is nothing.
_EPSILON = 1e-6
_LEAST = {"postgresql": "LEAST", "sqlite": "MIN"}
_GREATEST = {"postgresql": "GREATEST", "sqlite": "MAX"}

# Fragments are constants picked by dialect; values are always bound parameters.
_TAKE = (
    "UPDATE rate_buckets SET tokens = {refill} - 1, updated_at = {greatest}(updated_at, :now) "
    "WHERE key = :key AND {refill} - 1 >= :floor RETURNING tokens"
)
_CREATE = (
    "INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (:key, :tokens, :now) "
    "ON CONFLICT (key) DO NOTHING RETURNING tokens"
)
_PEEK = "SELECT {refill} FROM rate_buckets WHERE key = :key"


def _statements(dialect: str) -> tuple[sa.TextClause, sa.TextClause, sa.TextClause]:
    refill = f"{_LEAST[dialect]}(:burst, tokens + :rate * {_ELAPSED[dialect]})"
    now = sa.bindparam("now", type_=UTCDateTime())
    take = sa.text(_TAKE.format(refill=refill, greatest=_GREATEST[dialect]))
    peek = sa.text(_PEEK.format(refill=refill))
    return take.bindparams(now), sa.text(_CREATE).bindparams(now), peek.bindparams(now)


class TokenBucket:
    """The database-backed limiter; one instance may serve many keys and threads."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._take, self._create, self._peek = _statements(db.dialect)

    def acquire(self, key: str, limit: RateLimit, now: datetime, max_wait: float) -> float:
        """Take a token; return the seconds to sleep before using it.

        Raises ``RateLimitExceeded`` when that would be longer than ``max_wait``.
        """
        params = {
            "key": key,
            "now": now,
            "burst": float(limit.burst),
            "rate": float(limit.rate),
            "floor": -max(0.0, max_wait) * limit.rate - _EPSILON,
        }
        with self.db.write() as session:
            left = session.execute(self._take, params).scalar_one_or_none()
            if left is None:
                # Unknown key (first call ever) or not enough tokens: tell them apart.
                created = session.execute(
                    self._create, {"key": key, "tokens": limit.burst - 1.0, "now": now}
                ).scalar_one_or_none()
                if created is not None:
                    return 0.0
                left = session.execute(self._take, params).scalar_one_or_none()
            if left is None:
                available = session.execute(self._peek, params).scalar_one()
                raise RateLimitExceeded((1.0 - float(available)) / limit.rate)
        return max(0.0, -float(left) / limit.rate)
