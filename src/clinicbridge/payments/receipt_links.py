"""Signed links to a receipt, for the patient's e-mail (no sign-in).

A token is ``base64url(version || expiry || payment id || tag)`` where ``tag`` is
HMAC-SHA256 (truncated to 128 bits) over the rest, keyed by a key derived from the
master key with HKDF (``info=b"clinicbridge receipt links v1"``): nothing is stored,
only the master key can mint one, and tags are compared in constant time. A link is
good for ``VALID_FOR`` (a year); rotating the master key invalidates links sent.

``make_token`` and ``read_token`` take the key and an opaque ASCII subject, so other
public links reuse them under a key of their own (``onboarding_links``: another HKDF
``info``, so a token of one kind is never good for another).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from datetime import UTC, datetime, timedelta

from clinicbridge.core import subkeys
from clinicbridge.settings import Settings, load_master_key

HKDF_INFO = b"clinicbridge receipt links v1"
VERSION = 1
TAG_BYTES = 16
VALID_FOR = timedelta(days=365)
PATH_PREFIX = "/receipts/"
_HEADER = struct.Struct(">BI")


class ReceiptLinkError(Exception):
    """Malformed, altered, signed with another key, or expired."""


class ExpiredLinkError(ReceiptLinkError):
    """Genuine, but past its expiry."""


def link_key(settings: Settings) -> bytes:
    return subkeys.derive(load_master_key(settings.master_key_file), HKDF_INFO)


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:TAG_BYTES]


def make_token(key: bytes, subject: str, expires_at: datetime) -> str:
    """A token naming ``subject`` (a payment id for receipts) until ``expires_at``."""
    payload = _HEADER.pack(VERSION, int(expires_at.timestamp())) + subject.encode("ascii")
    return base64.urlsafe_b64encode(payload + _tag(key, payload)).rstrip(b"=").decode("ascii")


def read_token(key: bytes, token: str, now: datetime) -> str:
    """The subject of a genuine, unexpired token; ReceiptLinkError otherwise
    (ExpiredLinkError for a genuine one past its expiry)."""
    if not 1 <= len(token) <= 200:
        raise ReceiptLinkError("bad length")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise ReceiptLinkError("not base64url") from None
    if len(raw) <= _HEADER.size + TAG_BYTES:
        raise ReceiptLinkError("too short")
    payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(key, payload)):
        raise ReceiptLinkError("bad tag")
    version, expiry = _HEADER.unpack(payload[: _HEADER.size])
    if version != VERSION:
        raise ReceiptLinkError("unknown version")
    if datetime.fromtimestamp(expiry, UTC) <= now:
        raise ExpiredLinkError("expired")
    try:
        return payload[_HEADER.size :].decode("ascii")
    except UnicodeDecodeError:
        raise ReceiptLinkError("not ascii") from None


def receipt_url(settings: Settings, payment_id: str, now: datetime) -> str:
    token = make_token(link_key(settings), payment_id, now + VALID_FOR)
    return f"{settings.public_base_url}{PATH_PREFIX}{token}"
