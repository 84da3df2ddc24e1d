"""Retry delays: exponential backoff with full jitter.

Attempt n (1-based) failed → wait a uniform random time in [0, cap(n)] where
cap(n) = BASE * 2^(n-1), bounded by CAP. With the defaults (2 minutes, 12
attempts) the caps add up to about 2.8 days: the last retry of a job that keeps
failing happens at most ~3 days after the first attempt. Full jitter spreads
retries of many jobs that failed together (a provider outage) instead of
sending them back all at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

BASE = timedelta(minutes=2)
CAP = timedelta(days=2)

Backoff = Callable[[int], timedelta]


def backoff_cap(attempt: int, base: timedelta = BASE, cap: timedelta = CAP) -> timedelta:
    delay: timedelta = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay


def exponential_full_jitter(attempt: int) -> timedelta:
    return timedelta(seconds=random.uniform(0, backoff_cap(attempt).total_seconds()))  # noqa: S311


def fixed(delay: timedelta) -> Backoff:
    """A constant delay, for handlers (and tests) that want one."""
    return lambda _attempt: delay
