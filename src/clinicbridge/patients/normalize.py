"""Normal forms of what patients are searched and matched by: names, phones, e-mails.

``fold`` is what name search compares (no accents, no case, single spaces);
``name_key`` is a phonetic key of the folded last name, so "Tremblai" finds
"Tremblay"; phones are stored in E.164, parsed in the clinic's country.
"""

from __future__ import annotations

import importlib.resources
import unicodedata
from functools import lru_cache

import jellyfish
import phonenumbers
from email_validator import EmailNotValidError, validate_email

DEFAULT_REGION = "US"
NAME_KEY_LENGTH = 64  # the column's width

# Legacy zone names that zone.tab does not list (it names canonical zones only).
_LEGACY_REGIONS = {"Canada/": "CA", "US/": "US", "GB": "GB", "Europe/Belfast": "GB"}


def fold(text: str) -> str:
    """Lower case, accents removed, whitespace collapsed: "  Hélène  D'Aoust" → "helene d'aoust"."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def name_key(last_name: str) -> str:
    """Phonetic (metaphone) key of the folded last name; "" when it has no letters."""
    return jellyfish.metaphone(fold(last_name))[:NAME_KEY_LENGTH]


def phone_e164(raw: str, region: str) -> str:
    """``raw`` in any usual format as E.164; national numbers are read in ``region``.

    The message of the ValueError never repeats the number (it is patient data).
    """
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(
            f"is not a valid phone number (numbers without +country code are read as {region})"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def email_norm(raw: str) -> str:
    """A syntactically valid e-mail address, lower-cased (no DNS lookup)."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise ValueError("is not a valid e-mail address") from None
    return checked.normalized.lower()


@lru_cache(maxsize=1)
def _zone_regions() -> dict[str, str]:
    # zone.tab maps each canonical zone to its country (ISO 3166 code).
    text = importlib.resources.files("tzdata").joinpath("zoneinfo/zone.tab").read_text("utf-8")
    regions = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            regions[parts[2]] = parts[0]
    return regions


@lru_cache(maxsize=256)
def region_of(timezone: str) -> str:
    """The country a clinic's time zone lies in, used to read national phone numbers.

    America/Toronto → "CA", America/Chicago → "US", Europe/London → "GB"; zones
    shared by no single country (UTC) fall back to "US".
    """
    region = _zone_regions().get(timezone)
    if region is None:
        region = next(
            (code for prefix, code in _LEGACY_REGIONS.items() if timezone.startswith(prefix)),
            DEFAULT_REGION,
        )
    return region
