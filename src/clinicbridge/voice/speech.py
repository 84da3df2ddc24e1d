"""How the voice tools say things: times, choices, openings, and their data fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from clinicbridge.voice.backend import BookingInfo, SlotInfo
from clinicbridge.voice.toolkit import ToolEnv

SPOKEN_SLOTS = 3  # a caller cannot keep more in mind
LISTED_SLOTS = 10


def spoken_time(value: datetime, tz: ZoneInfo, *, with_day: bool = True) -> str:
    local = value.astimezone(tz)
    clock = local.strftime("%-I:%M %p").replace(":00 ", " ")
    return f"{local:%A, %B} {local.day} at {clock}" if with_day else clock


def spoken_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def spoken_slots(slots: list[SlotInfo], tz: ZoneInfo) -> str:
    """ "Tuesday, March 10 at 9 AM, 9:30 AM or 10 AM" (times of one day share it)."""
    parts, last_day = [], None
    for slot in slots[:SPOKEN_SLOTS]:
        day = slot.start.astimezone(tz).date()
        parts.append(spoken_time(slot.start, tz, with_day=day != last_day))
        last_day = day
    return spoken_list(parts)


def slot_data(slots: list[SlotInfo], env: ToolEnv, names: dict[str, str]) -> list[dict[str, Any]]:
    tz = env.tz
    return [
        {
            "start": s.start.astimezone(tz).isoformat(),
            "end": s.end.astimezone(tz).isoformat(),
            "provider_id": s.provider_id,
            "provider": names.get(s.provider_id),
        }
        for s in slots[:LISTED_SLOTS]
    ]


def booking_data(booking: BookingInfo, env: ToolEnv) -> dict[str, Any]:
    tz = env.tz
    return {
        "booking_id": booking.id,
        "status": booking.status,
        "start": booking.start.astimezone(tz).isoformat(),
        "end": booking.end.astimezone(tz).isoformat(),
        "confirmation_code": booking.confirmation_code,
        "provider_id": booking.provider_id,
        "service_id": booking.service_id,
    }
