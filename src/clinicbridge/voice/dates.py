"""Dates and times as callers say them, resolved in the clinic's timezone.

"next Tuesday morning" is a window (Tuesday 08:00-12:00), "tomorrow at 3pm" an
instant, "1980-03-05" or "March 5th 1980" a date of birth. Parsing is
``dateparser``'s (imported on first use: it costs a fraction of a second to load
and warm); this module only adds what a receptionist means by parts of the day,
and checks the wall-clock time exists (a 02:30 inside a DST gap does not).

Every failure is a ``DateError`` whose message can be read aloud as is.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

Precision = Literal["instant", "day", "week", "month"]

# What a receptionist means by a part of the day (clinic wall-clock hours).
DAYPARTS: dict[str, tuple[int, int]] = {
    "morning": (8, 12),
    "afternoon": (12, 17),
    "evening": (17, 21),
    "tonight": (17, 21),
}
_DAYPART = re.compile(r"\b(?:in the |this )?(morning|afternoon|evening|tonight)\b", re.I)
# "at 10" is an hour, not the 10th of a month: say so to the parser.
_BARE_HOUR = re.compile(r"\bat (\d{1,2})\b(?!\s*(?::|am|pm|a\.m|p\.m|o'?clock))", re.I)
# "the 12th": a day of the current (or next) month.
_ORDINAL_DAY = re.compile(r"^\s*(?:on\s+)?(?:the\s+)?(\d{1,2})(?:st|nd|rd|th)\s*$", re.I)
_PERIODS: dict[str, Precision] = {
    "time": "instant",
    "day": "day",
    "week": "week",
    "month": "month",
    "year": "month",
}

_lock = threading.Lock()
_parser: Any = None


class DateError(ValueError):
    """A date or time that cannot be used; the message is fit to be spoken."""


@dataclass(frozen=True)
class When:
    """A resolved request: ``[start, end)`` in UTC; ``end == start`` for an instant."""

    start: datetime
    end: datetime
    precision: Precision
    daypart: str | None = None

    @property
    def is_instant(self) -> bool:
        return self.precision == "instant"


def _date_parser() -> Any:
    """The shared, warmed dateparser parser (English; settings per call)."""
    global _parser
    if _parser is None:
        with _lock:
            if _parser is None:
                from dateparser.date import DateDataParser

                parser = DateDataParser(languages=["en"])
                parser.get_date_data("tomorrow at 3pm")  # the first parse loads its tables
                _parser = parser
    return _parser


def warm() -> None:
    """Load dateparser now (about 0.2 s) instead of during a caller's first request."""
    _date_parser()


def _parse(text: str, settings: dict[str, Any]) -> tuple[datetime | None, str | None]:
    from dateparser.date import DateDataParser

    base = _date_parser()
    # A parser per settings is cheap once the language tables are loaded.
    parser = DateDataParser(languages=base.languages, settings=settings)
    data = parser.get_date_data(text)
    return data.date_obj, data.period


def local_instant(naive: datetime, tz: ZoneInfo) -> datetime:
    """A clinic wall-clock time as an aware datetime; DateError if the clock skips it.

    In a repeated hour (DST ends) the first occurrence is meant.
    """
    aware = naive.replace(tzinfo=tz, fold=0)
    back = aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if back != naive.replace(fold=0):
        raise DateError(
            f"{naive:%-I:%M %p} does not exist on {naive:%A, %B %-d}: the clocks change "
            "that night. Please choose another time."
        )
    return aware


def _ordinal_day(text: str, today: date) -> str | None:
    match = _ORDINAL_DAY.match(text)
    if match is None:
        return None
    day = int(match.group(1))
    year, month = today.year, today.month
    for _ in range(3):  # this month if the day is still ahead, else the next that has it
        try:
            candidate = date(year, month, day)
        except ValueError:
            candidate = None
        if candidate is not None and candidate >= today:
            return candidate.isoformat()
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise DateError(f"There is no {match.group(0).strip()} coming up. Which date do you mean?")


def resolve_when(text: str, timezone: str, now: datetime) -> When:
    """Resolve "next Tuesday morning", "tomorrow at 3pm", "2026-03-10T15:00" and the like.

    Times without a date are taken in the future (today if still ahead).
    """
    spoken = " ".join(str(text).split())
    if not spoken:
        raise DateError("Which day or time would you like?")
    if len(spoken) > 100:
        raise DateError("I could not understand that date. Which day would you like?")
    tz = ZoneInfo(timezone)
    local_now = now.astimezone(tz)
    iso = _iso(spoken, tz)
    if iso is not None:
        return When(iso, iso, "instant")
    daypart = None
    found = _DAYPART.search(spoken)
    if found:
        daypart = found.group(1).lower()
        spoken = (spoken[: found.start()] + spoken[found.end() :]).strip(" ,") or "today"
    spoken = _ordinal_day(spoken, local_now.date()) or _BARE_HOUR.sub(r"at \1:00", spoken)
    settings = {
        "PREFER_DATES_FROM": "future",
        # dateparser calls "tomorrow at 3pm" a day, not a time, when 15:00:00.000000 is
        # also the base's time of day; a spoken time never has microseconds.
        "RELATIVE_BASE": local_now.replace(tzinfo=None, microsecond=local_now.microsecond or 1),
        "RETURN_TIME_AS_PERIOD": True,
    }
    parsed, period = _parse(spoken, settings)
    if parsed is None:
        _check_impossible(spoken)
        raise DateError(
            "I could not understand that date. You can say something like "
            "'next Tuesday morning' or 'tomorrow at 3 PM'."
        )
    naive = parsed.replace(tzinfo=None) if parsed.tzinfo is None else _wall(parsed, tz)
    precision = _PERIODS.get(period or "day", "day")
    if precision == "month" and (naive.year, naive.month) == (local_now.year + 1, local_now.month):
        naive = naive.replace(year=local_now.year)  # "in March", said in March: this one
    if precision == "instant" and daypart is None:
        start = local_instant(naive.replace(second=0, microsecond=0), tz)
        return When(start.astimezone(UTC), start.astimezone(UTC), "instant")
    return _window(naive.date(), precision, daypart, tz)


_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_MONTH_DAY = re.compile(r"\b([a-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?\b", re.I)


def _check_impossible(text: str) -> None:
    """Name the problem when a caller says a day the month does not have (Feb 30)."""
    for match in _MONTH_DAY.finditer(text):
        word, day = match.group(1).lower(), int(match.group(2))
        month = next((i for i, m in enumerate(_MONTHS, 1) if m.startswith(word)), None)
        if month is None or len(word) < 3:
            continue
        longest = 29 if month == 2 else (30 if month in (4, 6, 9, 11) else 31)
        if day > longest or day == 0:
            raise DateError(
                f"{_MONTHS[month - 1].capitalize()} {day} does not exist. Which day do you mean?"
            )


def _wall(value: datetime, tz: ZoneInfo) -> datetime:
    return value.astimezone(tz).replace(tzinfo=None)


def _iso(text: str, tz: ZoneInfo) -> datetime | None:
    """An ISO 8601 date-time, as the assistant may pass one it read from a slot."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", text):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DateError("That date does not exist. Which day would you like?") from None
    if value.tzinfo is None:
        value = local_instant(value, tz)
    return value.astimezone(UTC)


def _window(day: date, precision: Precision, daypart: str | None, tz: ZoneInfo) -> When:
    days = {"day": 1, "week": 7, "month": 31, "instant": 1}[precision]
    if precision == "month":
        day = day.replace(day=1) if day.day != 1 else day
        following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        days = (following - day).days
    first_hour, last_hour = DAYPARTS[daypart] if daypart else (0, 24)
    start = datetime.combine(day, time()) + timedelta(hours=first_hour)
    end = datetime.combine(day + timedelta(days=days - 1), time()) + timedelta(hours=last_hour)
    # Window edges in a DST gap move forward to the next existing minute.
    start_utc = start.replace(tzinfo=tz).astimezone(UTC)
    end_utc = end.replace(tzinfo=tz).astimezone(UTC)
    return When(start_utc, end_utc, precision, daypart)


def resolve_date(text: str, *, past: bool = True, field: str = "date") -> date:
    """A calendar date such as a date of birth: "March 5th 1980", "1980-03-05"."""
    spoken = " ".join(str(text).split())
    if not spoken:
        raise DateError(f"What is the {field}?")
    if re.match(r"^\d{4}-\d{1,2}-\d{1,2}$", spoken):
        try:
            return date.fromisoformat(
                "-".join(p.zfill(2) for p in spoken.split("-"))  # 1980-3-5
            )
        except ValueError:
            raise DateError(f"That {field} does not exist. Could you say it again?") from None
    settings = {"PREFER_DATES_FROM": "past" if past else "future", "DATE_ORDER": "MDY"}
    parsed, period = _parse(spoken, settings)
    if parsed is None or period != "day":
        _check_impossible(spoken)
        raise DateError(f"I could not understand that {field}. Please say the month, day and year.")
    return parsed.date()
