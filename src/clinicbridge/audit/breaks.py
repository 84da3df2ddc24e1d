"""Naming what broke a chain: changed, deleted or inserted events, a cut tail, a bad head."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from clinicbridge.audit.chain import canonical_json, canonical_time, encode

BreakKind = Literal["changed", "deleted", "inserted", "truncated", "head"]
_sha256 = hashlib.sha256


@dataclass(frozen=True)
class ChainBreak:
    """The first bad spot of a chain; ``detail`` is a sentence naming the event."""

    kind: BreakKind
    seq: int
    event_id: str | None  # None when the event is gone
    detail: str


def canonical_row(row: Any) -> tuple[Any, ...] | None:
    """The row's fields with time and diff parsed and re-encoded; None if unreadable."""
    at, diff = row[3], row[13]
    try:
        moment = datetime.fromisoformat(at) if isinstance(at, str) else at
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        time_text = canonical_time(moment)
        diff_text = "null" if diff is None else canonical_json(json.loads(diff))
    except (TypeError, ValueError):
        return None
    return (*row[:3], time_text, *row[4:13], diff_text, row[14])


def gap(expected: int, seq: int, event_id: str) -> ChainBreak:
    if seq < expected:  # only possible if the unique (tenant_id, seq) was dropped
        return ChainBreak("inserted", seq, event_id, f"event {event_id} repeats seq {seq}")
    missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
    detail = f"event {missing} was deleted (missing before {event_id})"
    return ChainBreak("deleted", expected, None, detail)


def mismatch(fields: tuple[Any, ...], stored: str, prev_id: str) -> ChainBreak:
    """Content and hash disagree. Renumbered? Then something was added or removed before it."""
    eid, seq = fields[0], fields[2]

    def hashed_as(other_seq: int) -> bool:
        renumbered: tuple[Any, ...] = (*fields[:2], other_seq, *fields[3:])
        try:
            moved = encode(*renumbered)
        except TypeError:  # an unreadable row
            return False
        return bool(_sha256(moved).hexdigest() == stored)

    if seq > 1 and prev_id and hashed_as(seq - 1):
        detail = f"event {prev_id} (seq {seq - 1}) was inserted: {eid} was hashed as seq {seq - 1}"
        return ChainBreak("inserted", seq - 1, prev_id, detail)
    if hashed_as(seq + 1):
        detail = f"event seq {seq} was deleted: {eid} was hashed as seq {seq + 1}"
        return ChainBreak("deleted", seq, None, detail)
    detail = f"event {eid} (seq {seq}) was changed: its content does not match its hash"
    return ChainBreak("changed", seq, eid, detail)


def broken_link(seq: int, event_id: str, link: str, before_prev: str, prev_id: str) -> ChainBreak:
    if not prev_id:
        detail = f"event {event_id} (seq {seq}) was changed: it does not start the chain"
        return ChainBreak("changed", seq, event_id, detail)
    if link == before_prev:
        detail = f"event {prev_id} (seq {seq - 1}) was inserted: {event_id} links past it"
        return ChainBreak("inserted", seq - 1, prev_id, detail)
    detail = (
        f"event {prev_id} (seq {seq - 1}) was changed and rehashed: "
        f"{event_id} (seq {seq}) recorded another hash for it"
    )
    return ChainBreak("changed", seq - 1, prev_id, detail)


def tail(
    head: tuple[int, str] | None, last: int, last_hash: str, last_id: str
) -> ChainBreak | None:
    """Compare the last event with the head row: catches a deleted tail."""
    if head is None:
        if not last:
            return None
        detail = f"the chain head is missing (last event {last_id}, seq {last})"
        return ChainBreak("head", last, last_id, detail)
    head_seq, head_hash = head
    if head_seq > last:
        missing = f"seq {last + 1}..{head_seq}" if head_seq > last + 1 else f"seq {head_seq}"
        after = f"after {last_id} (seq {last})" if last_id else "the whole chain"
        detail = f"event {missing} was deleted from the end of the chain ({after})"
        return ChainBreak("truncated", last + 1, None, detail)
    if head_hash != last_hash:
        detail = (
            f"event {last_id} (seq {last}) does not match the chain head: "
            "it was changed and rehashed, or the head was changed"
        )
        return ChainBreak("head", last, last_id or None, detail)
    return None
