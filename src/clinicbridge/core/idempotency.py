"""``Idempotency-Key`` on POST: the same key and body give the same answer for 24 h.

A key is scoped to the credential that sent it. Stored responses are encrypted
(AES-256-GCM, key derived from the master key): they can hold a secret shown
once, such as a new API key. The first request claims the key
(state ``in_progress``); a concurrent twin gets 409 rather than running twice; a
different body under the same key gets 409. Only completed responses are stored,
so a request that failed can be corrected and retried under the same key.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.exc import IntegrityError

from clinicbridge.core import subkeys
from clinicbridge.core.errors import IdempotencyConflictError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import IdempotencyRecord
from clinicbridge.db.engine import Database

RETENTION = timedelta(hours=24)
# A claim older than this belongs to a request that died with its process.
ABANDONED_AFTER = timedelta(minutes=5)


class ResponseCipher:
    """Seals stored response bodies, bound to their (scope, key)."""

    def __init__(self, master_key: bytes) -> None:
        derived = subkeys.derive(master_key, b"clinicbridge idempotency v1")
        self._aead = AESGCM(derived)

    def seal(self, scope: str, key: str, body: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, body, f"{scope}|{key}".encode())

    def open(self, scope: str, key: str, sealed: bytes) -> bytes | None:
        """The body, or None if it cannot be opened (e.g. the master key was rotated)."""
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], f"{scope}|{key}".encode())
        except (InvalidTag, ValueError):
            return None


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    headers: dict[str, str]


def fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def claim(
    db: Database, scope: str, key: str, request_hash: str, now: datetime
) -> StoredResponse | None:
    """Claim the key for this request, or return the stored response to replay."""
    try:
        with db.write() as s:
            rec = s.scalar(
                sa.select(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope, IdempotencyRecord.key == key
                )
            )
            abandoned = (
                rec is not None
                and rec.state == "in_progress"
                and now - rec.created_at > ABANDONED_AFTER
            )
            if rec is not None and (rec.expires_at <= now or abandoned):
                s.delete(rec)
                s.flush()
                rec = None
            if rec is None:
                s.add(
                    IdempotencyRecord(
                        id=new_id("idk"),
                        scope=scope,
                        key=key,
                        request_hash=request_hash,
                        state="in_progress",
                        created_at=now,
                        expires_at=now + RETENTION,
                    )
                )
                s.flush()
                return None
            if rec.request_hash != request_hash:
                raise IdempotencyConflictError(
                    "This Idempotency-Key was already used with a different request."
                )
            if rec.state != "done" or rec.response_status is None:
                raise IdempotencyConflictError(
                    "A request with this Idempotency-Key is still being processed."
                )
            return StoredResponse(
                rec.response_status, rec.response_body or b"", dict(rec.response_headers or {})
            )
    except IntegrityError as exc:  # a concurrent twin claimed it first
        raise IdempotencyConflictError(
            "A request with this Idempotency-Key is still being processed."
        ) from exc


def complete(db: Database, scope: str, key: str, response: StoredResponse) -> None:
    with db.write() as s:
        s.execute(
            sa.update(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
            .values(
                state="done",
                response_status=response.status,
                response_body=response.body,
                response_headers=response.headers,
            )
        )


def release(db: Database, scope: str, key: str) -> None:
    with db.write() as s:
        s.execute(
            sa.delete(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope,
                IdempotencyRecord.key == key,
                IdempotencyRecord.state == "in_progress",
            )
        )


def purge_expired(db: Database, now: datetime) -> int:
    with db.write() as s:
        result = s.execute(sa.delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
        return int(getattr(result, "rowcount", 0) or 0)
