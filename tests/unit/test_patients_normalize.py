"""Normal forms for patient names, phones and e-mails."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinicbridge.patients.normalize import email_norm, fold, name_key, phone_e164, region_of


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("Hélène", "helene"),
        ("  ÉLODIE   Saint-Pierre ", "elodie saint-pierre"),
        ("Ñúñez", "nunez"),
        ("STRAẞE", "strasse"),
        ("ﬁona", "fiona"),  # compatibility ligature
        ("Zoë\tO'Brien", "zoe o'brien"),
    ],
)
def test_fold_removes_accents_case_and_extra_spaces(raw: str, folded: str) -> None:
    assert fold(raw) == folded


@given(st.text(max_size=40))
def test_fold_is_idempotent(text: str) -> None:
    assert fold(fold(text)) == fold(text)


def test_name_key_is_phonetic_and_ignores_accents() -> None:
    assert name_key("Tremblay") == name_key("Tremblai") == name_key("TREMBLAY")
    assert name_key("Gagnon") == name_key("Gagnôn")
    assert name_key("Tremblay") != name_key("Gagnon")
    assert name_key("") == ""


@pytest.mark.parametrize(
    "raw", ["(514) 555-0199", "514-555-0199", "+1 514 555 0199", "1 514 555 0199", "5145550199"]
)
def test_phone_any_format_becomes_e164(raw: str) -> None:
    assert phone_e164(raw, "CA") == "+15145550199"


def test_phone_national_numbers_read_in_the_clinics_country() -> None:
    assert phone_e164("020 7946 0018", "GB") == "+442079460018"
    assert phone_e164("+44 20 7946 0018", "US") == "+442079460018"


@pytest.mark.parametrize("raw", ["hello", "555", "+1 999 555 0199", "12"])
def test_phone_invalid_raises_without_repeating_the_number(raw: str) -> None:
    with pytest.raises(ValueError, match="phone number") as info:
        phone_e164(raw, "CA")
    assert raw not in str(info.value)


def test_email_norm_lowercases_and_validates() -> None:
    assert email_norm("  Helene.Tremblay@Example.COM ") == "helene.tremblay@example.com"
    with pytest.raises(ValueError, match="e-mail"):
        email_norm("not-an-email")


@pytest.mark.parametrize(
    ("zone", "region"),
    [
        ("America/Toronto", "CA"),
        ("America/Vancouver", "CA"),
        ("America/St_Johns", "CA"),
        ("America/New_York", "US"),
        ("America/Chicago", "US"),
        ("Europe/London", "GB"),
        ("Europe/Paris", "FR"),
        ("Australia/Sydney", "AU"),
        ("Canada/Eastern", "CA"),
        ("UTC", "US"),
        ("Not/AZone", "US"),
    ],
)
def test_region_of_timezone(zone: str, region: str) -> None:
    assert region_of(zone) == region
