"""Prefixed, sortable, opaque identifiers such as ``ten_01JD3...``.

The body is a ULID-like value: 48 bits of milliseconds then 80 random bits,
in Crockford base32, so ids sort by creation time and never collide in practice.
"""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BODY_LEN = 26
ID_PATTERN = re.compile(r"^[a-z]{2,5}_[0-9A-HJKMNP-TV-Z]{26}$")


def new_id(prefix: str, now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(_BODY_LEN):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(value: str, prefix: str | None = None) -> bool:
    if not ID_PATTERN.match(value):
        return False
    return prefix is None or value.startswith(prefix + "_")
