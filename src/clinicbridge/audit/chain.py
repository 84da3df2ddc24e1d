"""The canonical encoding of an audit event and its hash (encoding version 1).

An event's ``hash`` is the lowercase hex SHA-256 of the UTF-8 bytes of its
sixteen fields joined by U+001F (the ASCII unit separator)::

    "cb.audit.v1", id, tenant_id, seq, occurred_at, actor_type, actor_id, action,
    resource_type, resource_id*, request_id*, ip*, outcome, phi, diff, prev_hash

- ``seq``: decimal (1, 2, 3... per tenant); ``phi``: ``1`` or ``0``.
- ``occurred_at``: the UTC time as ``YYYY-MM-DD HH:MM:SS.ffffff`` (always six
  fraction digits: the precision both databases store).
- fields marked * may be null: a null is written as U+001E, a value as ``=``
  followed by the value.
- ``diff``: its canonical JSON, as written by Python's ``json.dumps(diff,
  sort_keys=True, ensure_ascii=True, allow_nan=False)`` (default separators
  ``", "`` and ``": "``); ``null`` when there is none.
- ``prev_hash``: the hash of the previous event of the same tenant, or
  ``GENESIS`` (64 zeros) for seq 1.

No field may contain a control character (U+0000 to U+001F; appends refuse
them, and JSON escapes them), so the fields can always be told apart: two
different events never share an encoding. Every column is covered, so changing
any field changes the hash; each hash covers its predecessor, so deleting or
inserting an event breaks the next link. The version tag is hashed too: a later
encoding gets a new tag and can never be confused with this one. The diff is
stored in this same canonical form, so ``verify`` can hash stored text as is.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

ENCODING_VERSION = 1
VERSION_TAG = "cb.audit.v1"
GENESIS = "0" * 64
SEPARATOR = "\x1f"
NULL = "\x1e"
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")

# Order of the fields in the encoding (and of the columns ``verify`` selects).
FIELDS = (
    "id",
    "tenant_id",
    "seq",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "resource_type",
    "resource_id",
    "request_id",
    "ip",
    "outcome",
    "phi",
    "diff",
    "prev_hash",
)

_json = json.JSONEncoder(sort_keys=True, ensure_ascii=True, allow_nan=False).encode
_join = SEPARATOR.join
_sha256 = hashlib.sha256


def canonical_time(moment: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC; ``moment`` must be timezone-aware."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value (``null`` for None), as hashed for ``diff``."""
    return "null" if value is None else str(_json(value))


def encode(
    event_id: str,
    tenant_id: str,
    seq: int,
    occurred_at: str,
    actor_type: str,
    actor_id: str,
    action: str,
    resource_type: str,
    resource_id: str | None,
    request_id: str | None,
    ip: str | None,
    outcome: str,
    phi: bool,
    diff_json: str,
    prev_hash: str,
) -> bytes:
    """The hashed bytes, given the canonical texts of the time and of the diff."""
    return _join(
        (
            VERSION_TAG,
            event_id,
            tenant_id,
            str(seq),
            occurred_at,
            actor_type,
            actor_id,
            action,
            resource_type,
            NULL if resource_id is None else "=" + resource_id,
            NULL if request_id is None else "=" + request_id,
            NULL if ip is None else "=" + ip,
            outcome,
            "1" if phi else "0",
            diff_json,
            prev_hash,
        )
    ).encode()


def event_hash(
    event_id: str,
    tenant_id: str,
    seq: int,
    occurred_at: datetime,
    actor_type: str,
    actor_id: str,
    action: str,
    resource_type: str,
    resource_id: str | None,
    request_id: str | None,
    ip: str | None,
    outcome: str,
    phi: bool,
    diff: dict[str, Any] | None,
    prev_hash: str,
) -> str:
    """The hash of one event; arguments in the order of ``FIELDS``."""
    return _sha256(
        encode(
            event_id,
            tenant_id,
            seq,
            canonical_time(occurred_at),
            actor_type,
            actor_id,
            action,
            resource_type,
            resource_id,
            request_id,
            ip,
            outcome,
            phi,
            canonical_json(diff),
            prev_hash,
        )
    ).hexdigest()


def hash_of(event: Any) -> str:
    """The hash of anything with the event's fields as attributes (a row, a model)."""
    return event_hash(*(getattr(event, name) for name in FIELDS))
