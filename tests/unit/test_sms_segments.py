"""SMS segment counting per 3GPP TS 23.038 (GSM 03.38): GSM-7 vs UCS-2, boundaries."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinicbridge.messaging.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    is_gsm7,
    sms_segments,
    split_sms,
)

# The default alphabet by code point (TS 23.038 §6.2.1); None is 0x1B, the escape.
_TABLE = [
    *"@£$¥èéùìòÇ\nØø\rÅå",
    *"Δ_ΦΓΛΩΠΨΣΘΞ",
    None,
    *"ÆæßÉ",
    *" !\"#¤%&'()*+,-./0123456789:;<=>?",
    *"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§",
    *"¿abcdefghijklmnopqrstuvwxyzäöñüà",
]
_GSM_TEXT = st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=700)


def test_the_basic_table_is_the_standard_one() -> None:
    assert len(_TABLE) == 128
    assert _TABLE.index(None) == 0x1B
    assert {c for c in _TABLE if c is not None} == GSM7_BASIC
    assert _TABLE[0x09] == "Ç" and _TABLE[0x7F] == "à" and _TABLE[0x24] == "¤"
    assert set("\f^{}\\[]~|€") == GSM7_EXTENSION


def test_empty_text_is_one_segment() -> None:
    assert sms_segments("") == ("GSM-7", 0, 1)


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_boundaries(length: int, segments: int) -> None:
    assert sms_segments("a" * length) == ("GSM-7", length, segments)


@pytest.mark.parametrize(
    ("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2_boundaries(length: int, segments: int) -> None:
    assert sms_segments("ê" * length) == ("UCS-2", length, segments)


def test_extension_characters_cost_two_septets() -> None:
    assert sms_segments("{}[]~\\|^€\f") == ("GSM-7", 20, 1)
    assert sms_segments("€" * 80) == ("GSM-7", 160, 1)
    assert sms_segments("a" * 159 + "€") == ("GSM-7", 161, 2)


def test_an_escape_sequence_is_never_split_across_parts() -> None:
    # 306 septets would fit 2 parts of 153, but the € straddles the first boundary.
    text = "a" * 152 + "€" + "a" * 152
    assert sms_segments(text) == ("GSM-7", 306, 3)
    parts = split_sms(text)
    assert [len(p) for p in parts] == [152, 152, 1]
    assert parts[1].startswith("€")


def test_one_non_gsm_character_switches_the_whole_text_to_ucs2() -> None:
    assert sms_segments("a" * 100) == ("GSM-7", 100, 1)
    assert sms_segments("a" * 99 + "ç") == ("UCS-2", 100, 2)
    assert sms_segments("Ç") == ("GSM-7", 1, 1)  # capital C cedilla is in the table
    for char in "ç`\tâêîôûœδ\u00a0\u202f":
        assert sms_segments(char)[0] == "UCS-2", repr(char)


def test_emoji_are_surrogate_pairs_of_two_units() -> None:
    assert sms_segments("😀") == ("UCS-2", 2, 1)
    assert sms_segments("😀" * 35) == ("UCS-2", 70, 1)
    assert sms_segments("😀" * 36) == ("UCS-2", 72, 2)
    assert sms_segments("👍🏽") == ("UCS-2", 4, 1)  # emoji + skin tone: two pairs
    assert sms_segments("😀" * 34) == ("UCS-2", 68, 1)


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    text = "ê" * 66 + "😀" + "ê" * 66  # 134 units: 2 parts of 67 if the pair could split
    assert sms_segments(text) == ("UCS-2", 134, 3)
    assert [len(p) for p in split_sms(text)] == [66, 66, 1]


def test_french_with_gsm_accents_stays_gsm7() -> None:
    assert is_gsm7("Rendez-vous confirmé à 14 h 30, déplacé où? Ça va.")
    assert not is_gsm7("Votre reçu")


def _cost(text: str, encoding: str) -> int:
    if encoding == "GSM-7":
        return sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return len(text.encode("utf-16-le")) // 2


@given(_GSM_TEXT)
def test_gsm_texts_count_septets(text: str) -> None:
    encoding, units, _ = sms_segments(text)
    assert encoding == "GSM-7"
    assert units == len(text) + sum(c in GSM7_EXTENSION for c in text)


@given(st.text(max_size=400))
def test_ucs2_units_are_utf16_code_units(text: str) -> None:
    encoding, units, _ = sms_segments(text)
    if encoding == "UCS-2":
        assert units == len(text.encode("utf-16-le", "surrogatepass")) // 2


@given(st.one_of(_GSM_TEXT, st.text(max_size=400)))
def test_parts_rebuild_the_text_and_each_fits(text: str) -> None:
    encoding, units, segments = sms_segments(text)
    parts = split_sms(text)
    assert "".join(parts) == text
    assert len(parts) == segments
    single, part = (160, 153) if encoding == "GSM-7" else (70, 67)
    if units <= single:
        assert segments == 1
    else:
        assert all(_cost(p, encoding) <= part for p in parts)
        # Never split: a part ends at most one unit short of full, so the count is
        # at least the ideal and at most one extra part per boundary unit lost.
        assert math.ceil(units / part) <= segments <= math.ceil(units / (part - 1))


@given(_GSM_TEXT, st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION)))
def test_appending_never_lowers_the_count(text: str, char: str) -> None:
    assert sms_segments(text + char)[2] >= sms_segments(text)[2]
