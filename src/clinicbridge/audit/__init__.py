"""The tamper-evident audit log: hash-chained events per clinic, verification, export.

Appending needs only ``core.context``, ``core.ids`` and ``db``, so that the identity
services in ``core`` (users, API keys, roles, the clinic) record their own changes
in the same transaction::

    record(session, ctx, "user.update", "user", user.id, diff=diff_of(before, after))

Names are imported on first use, so ``clinicbridge --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clinicbridge.audit.breaks import ChainBreak
    from clinicbridge.audit.chain import ENCODING_VERSION, GENESIS, event_hash, hash_of
    from clinicbridge.audit.diff import MASK, SECRET_WORDS, diff_of, scrub
    from clinicbridge.audit.export import export_jsonl, iter_events
    from clinicbridge.audit.service import (
        ACTOR_TYPES,
        OUTCOMES,
        PLATFORM,
        Appended,
        NewEvent,
        append,
        append_many,
        event_for,
        record,
        record_system,
    )
    from clinicbridge.audit.verify import ChainReport, verify_chains

_HOMES = {
    "chain": ("ENCODING_VERSION", "GENESIS", "event_hash", "hash_of"),
    "diff": ("MASK", "SECRET_WORDS", "diff_of", "scrub"),
    "export": ("export_jsonl", "iter_events"),
    "service": (
        "ACTOR_TYPES",
        "OUTCOMES",
        "PLATFORM",
        "Appended",
        "NewEvent",
        "append",
        "append_many",
        "event_for",
        "record",
        "record_system",
    ),
    "breaks": ("ChainBreak",),
    "verify": ("ChainReport", "verify_chains"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "ACTOR_TYPES",
    "ENCODING_VERSION",
    "GENESIS",
    "MASK",
    "OUTCOMES",
    "PLATFORM",
    "SECRET_WORDS",
    "Appended",
    "ChainBreak",
    "ChainReport",
    "NewEvent",
    "append",
    "append_many",
    "diff_of",
    "event_for",
    "event_hash",
    "export_jsonl",
    "hash_of",
    "iter_events",
    "record",
    "record_system",
    "scrub",
    "verify_chains",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
