"""Build the variables of a message: plain dicts of strings, formatted for the patient.

Dates and amounts are formatted with Babel (CLDR) in the patient's language and the
clinic's time zone. CLDR puts no-break spaces in some formats ("7:30\\u202fPM",
"12,50\\u00a0$"); they are replaced by plain spaces so a text stays in the GSM-7
alphabet and costs half as many SMS segments.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime
from babel.numbers import format_currency, get_currency_precision

from clinicbridge.core.errors import InvalidInputError
from clinicbridge.messaging.languages import fallback_chain

Variables = dict[str, dict[str, str]]

_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2009": " "})


def babel_locale(language: str | None, clinic_default: str | None = None) -> Locale:
    """The first locale along the fallback chain that CLDR knows (at worst ``en``)."""
    for tag in fallback_chain(language, clinic_default):
        try:
            return Locale.parse(tag, sep="-")
        except (ValueError, UnknownLocaleError):
            continue
    return Locale.parse("en")


def _plain(text: str) -> str:
    return text.translate(_SPACES)


def format_start(start: datetime, timezone: str, locale: Locale) -> dict[str, str]:
    """``date_text``, ``time_text`` and both together (``start_text``), CLDR style."""
    if start.tzinfo is None:
        raise InvalidInputError.one("start", "A timezone-aware datetime is required.")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError.one("timezone", f"Unknown time zone '{timezone}'.") from exc
    date_pattern = locale.date_formats["full"].pattern
    time_pattern = locale.time_formats["short"].pattern
    glue = str(locale.datetime_formats["full"])
    both = glue.replace("{1}", date_pattern).replace("{0}", time_pattern)
    return {
        "start_text": _plain(format_datetime(start, both, tzinfo=zone, locale=locale)),
        "date_text": _plain(format_datetime(start, date_pattern, tzinfo=zone, locale=locale)),
        "time_text": _plain(format_datetime(start, time_pattern, tzinfo=zone, locale=locale)),
    }


def format_amount(amount_minor: int, currency: str, locale: Locale) -> str:
    """``1250, "CAD"`` → ``$12.50`` (en-CA) or ``12,50 $`` (fr-CA). Integers only in."""
    digits = get_currency_precision(currency)
    amount = Decimal(amount_minor).scaleb(-digits)
    return _plain(format_currency(amount, currency, locale=locale))


def booking_variables(
    *,
    language: str | None,
    clinic_default_language: str | None,
    timezone: str,
    clinic_name: str,
    clinic_phone: str,
    patient_first_name: str,
    start: datetime,
    service: str,
    provider: str,
    location: str,
    confirmation_code: str,
    confirm_url: str,
    cancel_url: str,
    video_url: str | None = None,
    previous_start: datetime | None = None,
) -> Variables:
    """Variables of the ``booking.*`` kinds (``previous_start_text`` for rescheduled)."""
    locale = babel_locale(language, clinic_default_language)
    booking = {
        **format_start(start, timezone, locale),
        "service": service,
        "provider": provider,
        "location": location,
        "confirmation_code": confirmation_code,
        "video_url": video_url or "",
    }
    if previous_start is not None:
        booking["previous_start_text"] = format_start(previous_start, timezone, locale)[
            "start_text"
        ]
    return {
        "clinic": {"name": clinic_name, "phone": clinic_phone},
        "patient": {"first_name": patient_first_name},
        "booking": booking,
        "links": {"confirm_url": confirm_url, "cancel_url": cancel_url},
    }


def payment_link_variables(
    *,
    language: str | None,
    clinic_default_language: str | None,
    clinic_name: str,
    clinic_phone: str,
    patient_first_name: str,
    amount_minor: int,
    currency: str,
    pay_url: str,
) -> Variables:
    """Variables of ``payment.link``: a secure page to pay ``amount_minor`` on."""
    locale = babel_locale(language, clinic_default_language)
    return {
        "clinic": {"name": clinic_name, "phone": clinic_phone},
        "patient": {"first_name": patient_first_name},
        "payment": {
            "amount_text": format_amount(amount_minor, currency.upper(), locale),
            "currency": currency.upper(),
            "pay_url": pay_url,
        },
    }


def payment_variables(
    *,
    language: str | None,
    clinic_default_language: str | None,
    clinic_name: str,
    clinic_phone: str,
    patient_first_name: str,
    amount_minor: int,
    currency: str,
    receipt_url: str,
) -> Variables:
    """Variables of ``payment.receipt``; the amount is in minor units (cents)."""
    locale = babel_locale(language, clinic_default_language)
    return {
        "clinic": {"name": clinic_name, "phone": clinic_phone},
        "patient": {"first_name": patient_first_name},
        "payment": {
            "amount_text": format_amount(amount_minor, currency.upper(), locale),
            "currency": currency.upper(),
            "receipt_url": receipt_url,
        },
    }
