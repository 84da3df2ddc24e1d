"""Signed links in patient messages that confirm or cancel a booking without signing in.

A token is ``base64url(payload || tag)`` without padding, where ``payload`` is a
version byte, an action byte, the expiry (unsigned 32-bit integer seconds since the
epoch) and an id (ASCII), and ``tag`` is HMAC-SHA256 over the payload, truncated to
128 bits to keep links short enough for SMS. Version 2 tokens name the message that
carried the link (one token per message: a click lands in that message's timeline,
and the booking is the message's); version 1 tokens name the booking itself and are
still accepted. The HMAC key is derived
from the master key with HKDF (``info=b"clinicbridge booking links v1"``), so no
token is stored and nothing but the master key can mint one. Tags are compared in
constant time. The booking id is globally unique, so a token names its clinic too:
a token for another clinic's booking cannot be forged without the key.

Rotating the master key invalidates links already sent (they answer "not found").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from clinicbridge.core import subkeys
from clinicbridge.settings import Settings, load_master_key

Action = Literal["confirm", "cancel"]

HKDF_INFO = b"clinicbridge booking links v1"
VERSION = 2  # what make_token mints by default
_BY_VERSION = {1: "booking", 2: "message"}  # what a token's id names
TAG_BYTES = 16
MAX_TOKEN_CHARS = 200
PATH_PREFIX = "/b/"

_ACTION_CODES: dict[str, bytes] = {"confirm": b"c", "cancel": b"x"}
_ACTIONS_BY_CODE: dict[bytes, Action] = {b"c": "confirm", b"x": "cancel"}
_HEADER = struct.Struct(">BcI")  # version, action, expiry seconds
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class LinkRef:
    """What a token allows: ``action`` on a booking, named directly (version 1) or
    through the message that carried the link (version 2)."""

    action: Action
    booking_id: str | None = None
    message_id: str | None = None


class LinkTokenError(Exception):
    """The token cannot be used; the message is safe to log but not worth showing."""


class BadLinkTokenError(LinkTokenError):
    """Malformed, altered, or signed with another key."""


class ExpiredLinkTokenError(LinkTokenError):
    """Genuine, but past its expiry."""


def derive_key(master_key: bytes) -> bytes:
    """The links' HMAC key, derived from the master key."""
    return subkeys.derive(master_key, HKDF_INFO)


def link_key(settings: Settings) -> bytes:
    return derive_key(load_master_key(settings.master_key_file))


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:TAG_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_token(
    key: bytes, subject_id: str, action: str, expires_at: datetime, *, version: int = VERSION
) -> str:
    """A token allowing ``action`` until ``expires_at`` (aware) on the booking named by
    ``subject_id``: a message id (version 2) or a booking id (version 1)."""
    code = _ACTION_CODES.get(action)
    if code is None:
        raise ValueError(f"unknown link action {action!r}")
    if version not in _BY_VERSION:
        raise ValueError(f"unknown link token version {version}")
    if not _SUBJECT_ID.match(subject_id):
        raise ValueError("the id must be 1-64 ASCII letters, digits or underscores")
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    expiry = int(expires_at.timestamp())
    if not 0 < expiry < 2**32:
        raise ValueError("expires_at is out of range")
    payload = _HEADER.pack(version, code, expiry) + subject_id.encode("ascii")
    return _b64(payload + _tag(key, payload))


def read_token(key: bytes, token: str, now: datetime) -> LinkRef:
    """What a genuine, unexpired token names and allows.

    Raises BadLinkTokenError for anything not minted with ``key`` (checked in constant
    time), ExpiredLinkTokenError once ``now`` reaches the token's expiry."""
    if not 0 < len(token) <= MAX_TOKEN_CHARS or not _TOKEN.match(token):
        raise BadLinkTokenError("malformed link token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadLinkTokenError("malformed link token") from None
    if _b64(raw) != token:  # one spelling per token (no stray trailing bits)
        raise BadLinkTokenError("malformed link token")
    if len(raw) <= _HEADER.size + TAG_BYTES:
        raise BadLinkTokenError("malformed link token")
    payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(key, payload)):
        raise BadLinkTokenError("link token signature does not match")
    version, code, expiry = _HEADER.unpack_from(payload)
    action = _ACTIONS_BY_CODE.get(code)
    subject_id = payload[_HEADER.size :].decode("ascii", errors="replace")
    names = _BY_VERSION.get(version)
    if names is None or action is None or not _SUBJECT_ID.match(subject_id):
        raise BadLinkTokenError("unknown link token version or action")
    if now >= datetime.fromtimestamp(expiry, UTC):
        raise ExpiredLinkTokenError("link token has expired")
    if names == "message":
        return LinkRef(action, message_id=subject_id)
    return LinkRef(action, booking_id=subject_id)


def link_url(settings: Settings, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}{PATH_PREFIX}{token}"


def booking_links(
    settings: Settings, booking_id: str, *, expires_at: datetime, message_id: str | None = None
) -> dict[str, str]:
    """Absolute ``confirm_url`` and ``cancel_url`` for a message about this booking, valid
    until ``expires_at`` (e.g. the appointment's start): bound to ``message_id`` when the
    message's id is known, else to the booking."""
    key = link_key(settings)
    subject, version = (message_id, 2) if message_id else (booking_id, 1)
    return {
        f"{action}_url": link_url(
            settings, make_token(key, subject, action, expires_at, version=version)
        )
        for action in ("confirm", "cancel")
    }
