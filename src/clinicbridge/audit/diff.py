"""Minimal diffs for audit events, with secrets and PHI masked before they are stored.

A diff maps each changed field to ``{"old": ..., "new": ...}`` (``old`` absent on
creation, ``new`` absent on deletion). A field is masked when the caller marks it
as PHI, or when a word of its name is a secret word (``password``, ``api_key``,
``client_secret``, ``refreshToken``, ``key_hash``...). String values that look like
secrets or password hashes are masked wherever they appear. A secret is never
stored, not even hashed: a change to it shows as ``MASK`` on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

MASK = "**********"
SECRET_WORDS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "key",
        "apikey",
        "hash",
        "salt",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "otp",
        "signature",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# Shapes of secrets we issue or hold: our API keys, common provider keys, password hashes.
_SECRET_VALUE = re.compile(
    r"^(cb_live_|sk_(live|test)_|rk_(live|test)_|whsec_|xox[abprs]-|gh[pousr]_|"
    r"Bearer\s|Basic\s|\$argon2|\$2[aby]\$|\$scrypt\$|pbkdf2)",
    re.IGNORECASE,
)
_MISSING: Any = object()


def is_secret_name(name: str, words: Iterable[str] = SECRET_WORDS) -> bool:
    """True if a word of ``name`` (snake_case, camelCase, kebab-case) is a secret word."""
    wanted = words if isinstance(words, frozenset | set) else frozenset(words)
    return any(w.lower() in wanted for w in _WORD.findall(name))


def jsonable(value: Any) -> Any:
    """A JSON-native copy of ``value``: times as ISO 8601, sets sorted, keys as strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("audit diffs cannot hold NaN or infinity")
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    raise TypeError(f"cannot put a {type(value).__name__} in an audit diff")


def _mask(value: Any) -> Any:
    """Every leaf becomes MASK (None stays None: "was unset" is not a secret)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return MASK


def scrub(value: Any, words: Iterable[str] = SECRET_WORDS) -> Any:
    """Mask values under secret-named keys and secret-looking strings, at any depth."""
    if isinstance(value, str):
        return MASK if _SECRET_VALUE.match(value) else value
    if isinstance(value, dict):
        return {
            k: _mask(v) if is_secret_name(k, words) else scrub(v, words) for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, words) for v in value]
    return value


def diff_of(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    phi_fields: Iterable[str] = (),
    secret_fields: Iterable[str] = SECRET_WORDS,
) -> dict[str, Any] | None:
    """The fields that differ between ``before`` and ``after``, masked; None if none do.

    ``secret_fields`` are words matched against each word of a field name;
    ``phi_fields`` are exact field names whose values are patient data.
    """
    words = frozenset(w.lower() for w in secret_fields)
    phi = frozenset(phi_fields)
    changes: dict[str, Any] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, _MISSING), after.get(name, _MISSING)
        if old is not _MISSING and new is not _MISSING and old == new:
            continue
        entry = {}
        if old is not _MISSING:
            entry["old"] = jsonable(old)
        if new is not _MISSING:
            entry["new"] = jsonable(new)
        if name in phi or is_secret_name(name, words):
            entry = _mask(entry)
        changes[name] = entry
    return scrub(changes, words) if changes else None
