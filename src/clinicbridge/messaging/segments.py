"""How many SMS segments a text costs (3GPP TS 23.038, formerly GSM 03.38).

A text that uses only the GSM 7-bit default alphabet plus its extension table is
sent as GSM-7: a single message holds 160 septets, each part of a concatenated
message 153 (the user data header takes the rest). An extension-table character
(``€ [ ] { } \\ ~ ^ | <form feed>``) costs two septets (ESC + char) and is never split
across two parts. Anything else forces UCS-2: 70 UTF-16 code units in a single
message, 67 per part; a character outside the BMP (most emoji) is a surrogate pair,
two units, and a pair is never split across two parts either.

``sms_segments(text)`` answers ``(encoding, units, segments)`` where ``units`` is
septets for GSM-7 and UTF-16 code units for UCS-2. No national language shift
tables are used (carriers rarely honour them).
"""

from __future__ import annotations

from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# The default alphabet, in code-point order 0x00..0x7F (0x1B is the escape to the
# extension table and is not a character of its own).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67


def is_gsm7(text: str) -> bool:
    """True if every character is in the default alphabet or its extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _units(text: str, encoding: Encoding) -> list[int]:
    """The cost of each character: septets (GSM-7) or UTF-16 code units (UCS-2)."""
    if encoding == "GSM-7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _count_parts(costs: list[int], part_size: int) -> int:
    """Greedy packing into parts of ``part_size`` without splitting a character."""
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part_size:
            parts += 1
            used = 0
        used += cost
    return parts


def sms_segments(text: str) -> tuple[Encoding, int, int]:
    """Return ``(encoding, units, segments)`` for ``text``; an empty text is one segment."""
    encoding: Encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    costs = _units(text, encoding)
    units = sum(costs)
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    if units <= single:
        return encoding, units, 1
    return encoding, units, _count_parts(costs, part)


def split_sms(text: str) -> list[str]:
    """The parts a sender would transmit, in order (one part if it fits in one message)."""
    encoding, units, _ = sms_segments(text)
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    if units <= single:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch, cost in zip(text, _units(text, encoding), strict=True):
        if used + cost > part:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += cost
    parts.append("".join(current))
    return parts
