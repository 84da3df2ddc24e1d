"""iCalendar resources (CalDAV ``calendar-data``) into instances over the sync window.

Parsed with ``icalendar``; recurring events (RRULE, RDATE, EXDATE, RECURRENCE-ID
overrides) expanded by ``recurring-ical-events`` in the event's own timezone, so a
weekly 10:00 in America/Toronto stays 10:00 across the DST change. Floating times (no
timezone) are read in the provider's timezone. One resource is one group: when it
changes, all its instances are replaced.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from clinicbridge.calendars.events import UID_SUFFIX, Instance, Window, key

log = logging.getLogger("clinicbridge.calendars")
MARKER = "X-CLINICBRIDGE-BOOKING"
MAX_INSTANCES = 5000  # per resource and window: a runaway RRULE must not stall a sync


def instances(href: str, data: str, window: Window, self_emails: frozenset[str]) -> list[Instance]:
    """The instances of one resource inside the window ([] for one we cannot read)."""
    try:
        calendar = icalendar.Calendar.from_ical(data)
        occurrences = recurring_ical_events.of(calendar, components=["VEVENT"]).between(
            window.start, window.end
        )
    except Exception as exc:  # a broken resource must not stop the calendar's sync
        log.warning(
            "calendar resource not readable",
            extra={"fields": {"error_class": type(exc).__name__}},
        )
        return []
    group = key(href)
    # A lone event keeps one key when it moves (an update, not a delete and an insert);
    # the instances of a recurring one are told apart by their RECURRENCE-ID.
    recurring = any(
        part.get(name) is not None
        for part in calendar.walk("VEVENT")
        for name in ("RRULE", "RDATE", "RECURRENCE-ID")
    )
    found: list[Instance] = []
    for event in occurrences:
        if len(found) >= MAX_INSTANCES:
            break
        found.append(_instance(event, href, group, window, self_emails, recurring=recurring))
    return found


def _instance(
    event: Any,
    href: str,
    group: str,
    window: Window,
    self_emails: frozenset[str],
    *,
    recurring: bool,
) -> Instance:
    start = event.get("DTSTART")
    recurrence = event.get("RECURRENCE-ID") if recurring else None
    marker = _utc(recurrence.dt, window) if recurrence is not None else None
    instance_key = key(f"{href}|{marker.isoformat() if marker is not None else ''}")
    busy = _busy(event, self_emails)
    if start is None:
        return Instance(instance_key, group, False)
    begin = start.dt
    end_prop, duration = event.get("DTEND"), event.get("DURATION")
    if isinstance(begin, date) and not isinstance(begin, datetime):
        last = end_prop.dt if end_prop is not None else begin + timedelta(days=1)
        if isinstance(last, datetime):
            last = last.date()
        return Instance(instance_key, group, busy, first_day=begin, end_day=max(last, begin))
    finish = (
        end_prop.dt if end_prop is not None else begin + (duration.dt if duration else timedelta())
    )
    lo, hi = _utc(begin, window), _utc(finish, window)
    if not (isinstance(lo, datetime) and isinstance(hi, datetime)) or hi <= lo:
        return Instance(instance_key, group, False)
    return Instance(instance_key, group, busy, start=lo, end=hi)


def _utc(value: Any, window: Window) -> datetime | date:
    if isinstance(value, datetime):
        moment: datetime = value
        if moment.tzinfo is None:  # floating: the provider's wall clock
            moment = moment.replace(tzinfo=ZoneInfo(window.timezone))
        return moment.astimezone(UTC)
    day: date = value
    return day


def _busy(event: Any, self_emails: frozenset[str]) -> bool:
    if str(event.get("STATUS", "")).upper() == "CANCELLED":
        return False
    if str(event.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
        return False
    if event.get(MARKER) is not None or str(event.get("UID", "")).endswith(UID_SUFFIX):
        return False
    attendees = event.get("ATTENDEE")
    for attendee in attendees if isinstance(attendees, list) else [attendees] if attendees else []:
        address = str(attendee).lower().removeprefix("mailto:")
        if address in self_emails:
            partstat = str(attendee.params.get("PARTSTAT", "")).upper()
            return partstat != "DECLINED"
    return True
