from __future__ import annotations

import pytest

from clinicbridge.core.ids import is_id, new_id
from clinicbridge.core.validation import check_currency, check_language, check_timezone, slugify


def test_ids_are_prefixed_sortable_and_unique() -> None:
    ids = [new_id("pat", now_ms=1_700_000_000_000 + i) for i in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert all(is_id(i, "pat") and len(i) == 30 for i in ids)
    same_ms = {new_id("bkg", now_ms=5) for _ in range(1000)}
    assert len(same_ms) == 1000
    assert not is_id("pat_123") and not is_id(ids[0], "bkg")


def test_time_zones() -> None:
    assert check_timezone("America/Toronto") == "America/Toronto"
    for bad in ("Mars/Olympus", "", "../etc/passwd", "america/toronto"):
        with pytest.raises(ValueError, match="IANA"):
            check_timezone(bad)


def test_languages() -> None:
    assert check_language("fr-CA") == "fr-CA"
    assert check_language("EN") == "en"
    assert check_language("zh-Hant-TW") == "zh-Hant-TW"
    for bad in ("french", "f", "en_US", "en-"):
        with pytest.raises(ValueError, match="BCP 47"):
            check_language(bad)


def test_currencies() -> None:
    assert check_currency("cad") == "CAD"
    for bad in ("CA", "XYZ", "dollars"):
        with pytest.raises(ValueError, match="ISO 4217"):
            check_currency(bad)


def test_slugify() -> None:
    assert slugify("Clinique Santé Montréal") == "clinique-sante-montreal"
    assert slugify("***") == "clinic"
