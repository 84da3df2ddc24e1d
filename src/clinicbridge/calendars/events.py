"""Outside calendar events as the sync engine sees them, whatever the provider.

Each source (Google, Graph, CalDAV) turns its answer into ``Changes``: instances that
are busy (become blocks), instances that are not (their block, if any, goes), removed
instances and removed series. What counts as busy is decided by the source's own
fields, with the same rules everywhere:

* cancelled or deleted: not busy (removed);
* transparent / ``showAs: free``: not busy;
* declined by the provider (their attendee entry, or Graph's ``responseStatus``): not busy;
* created by ClinicBridge (an exported booking, recognised by its marker): not busy,
  so a booking never blocks its own slot twice;
* all-day: busy for whole days in the provider's timezone (``all_day`` dates).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# Our marker on events we create (phase 2 export): Google private extended property,
# Graph transactionId prefix, iCalendar UID suffix (the same as the iCal feeds').
MARKER_PROPERTY = "clinicbridge"
TRANSACTION_PREFIX = "clinicbridge:"
UID_SUFFIX = "@clinicbridge"
MAX_KEY = 255


def key(value: str) -> str:
    """An outside id that fits ``busy_blocks.external_id`` (long ones are hashed)."""
    if len(value) <= MAX_KEY:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    timezone: str  # the provider's: all-day events block these local days

    def clip(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        """The part of [start, end) inside the window, or None."""
        lo, hi = max(start, self.start), min(end, self.end)
        return (lo, hi) if lo < hi else None


@dataclass(frozen=True)
class Instance:
    """One occurrence of an outside event."""

    key: str  # unique within the connection: the block's external_id
    group: str  # the series or resource it belongs to: external_group
    busy: bool
    start: datetime | None = None  # UTC, for timed events
    end: datetime | None = None
    first_day: date | None = None  # all-day events: [first_day, end_day)
    end_day: date | None = None

    def span(self, window: Window) -> tuple[datetime, datetime] | None:
        """UTC [start, end) of the block this instance makes, clipped to the window."""
        if not self.busy:
            return None
        if self.first_day is not None and self.end_day is not None:
            zone = ZoneInfo(window.timezone)
            start = datetime.combine(self.first_day, time(), zone).astimezone(UTC)
            end = datetime.combine(self.end_day, time(), zone).astimezone(UTC)
        elif self.start is not None and self.end is not None:
            start, end = self.start, self.end
        else:
            return None
        return window.clip(start, end)


@dataclass
class Changes:
    """What one sync round learnt. ``full``: the instances are the whole calendar (inside
    the window); blocks of the connection not among them are deleted."""

    full: bool
    instances: list[Instance] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # instance keys
    removed_groups: list[str] = field(default_factory=list)
    replaced_groups: list[str] = field(default_factory=list)  # delete, then instances
    cursor: str | None = None
    state: dict[str, Any] | None = None  # CalDAV ctag/etags


def parse_instant(value: str) -> datetime:
    """RFC 3339 with an offset (Google), or Graph's offset-less UTC with 7 decimals."""
    text = value.strip().replace("Z", "+00:00")
    if "." in text:  # Graph: 2026-03-10T14:00:00.0000000 (more digits than Python takes)
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        rest = tail[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def day_after(day: date) -> date:
    return day + timedelta(days=1)
