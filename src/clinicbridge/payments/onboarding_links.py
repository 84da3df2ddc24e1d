"""Signed links a provider follows back from Stripe's onboarding (no sign-in).

Stripe sends the provider to our ``return_url`` when they leave or finish onboarding,
and to our ``refresh_url`` when the onboarding link expired or was already used. The
provider has no ClinicBridge login, so each URL carries a token naming the clinic, the
provider and the page it is good for (``refresh`` or ``done``), valid ``VALID_FOR``.

The token is the receipt links' format (``receipt_links.make_token``: version, expiry,
subject, truncated HMAC-SHA256) under a key of its own, derived from the master key
with HKDF (``info=b"clinicbridge payout onboarding links v1"``): nothing is stored, a
receipt token is never an onboarding token, and rotating the master key voids links
sent. A refresh token only lets its holder get a new Stripe onboarding link for that
provider's account (Stripe itself then checks who is onboarding); it shows nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from clinicbridge.core import subkeys
from clinicbridge.payments import receipt_links
from clinicbridge.payments.receipt_links import ExpiredLinkError, ReceiptLinkError
from clinicbridge.settings import Settings, load_master_key

Purpose = Literal["refresh", "done"]

HKDF_INFO = b"clinicbridge payout onboarding links v1"
# Staff send the onboarding link to the provider, who may open it days later: Stripe
# then sends them to the refresh page, whose token must still be good.
VALID_FOR = timedelta(days=7)
REFRESH_PATH = "/payouts/onboarding/refresh"
DONE_PATH = "/payouts/onboarding/done"
_PATHS: dict[str, str] = {"refresh": REFRESH_PATH, "done": DONE_PATH}
_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")

__all__ = ["ExpiredLinkError", "OnboardingRef", "ReceiptLinkError", "read", "urls"]


@dataclass(frozen=True)
class OnboardingRef:
    tenant_id: str
    provider_id: str
    purpose: Purpose


def link_key(settings: Settings) -> bytes:
    return subkeys.derive(load_master_key(settings.master_key_file), HKDF_INFO)


def make_token(key: bytes, ref: OnboardingRef, expires_at: datetime) -> str:
    if not (_ID.match(ref.tenant_id) and _ID.match(ref.provider_id)):
        raise ValueError("ids must be 1-64 ASCII letters, digits or underscores")
    subject = f"{ref.purpose}.{ref.tenant_id}.{ref.provider_id}"
    return receipt_links.make_token(key, subject, expires_at)


def read(key: bytes, token: str, purpose: Purpose, now: datetime) -> OnboardingRef:
    """The clinic and provider of a genuine, unexpired token for ``purpose``.
    ExpiredLinkError for a genuine expired one, ReceiptLinkError for anything else
    (altered, another key, another page's token)."""
    subject = receipt_links.read_token(key, token, now)
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != purpose or not all(_ID.match(p) for p in parts[1:]):
        raise ReceiptLinkError("not a token for this page")
    return OnboardingRef(parts[1], parts[2], purpose)


def url(settings: Settings, key: bytes, ref: OnboardingRef, now: datetime) -> str:
    token = make_token(key, ref, now + VALID_FOR)
    base = settings.public_base_url.rstrip("/")
    return f"{base}{_PATHS[ref.purpose]}?{urlencode({'token': token})}"


def urls(settings: Settings, tenant_id: str, provider_id: str, now: datetime) -> tuple[str, str]:
    """The ``refresh_url`` and ``return_url`` of a new onboarding link."""
    key = link_key(settings)
    return (
        url(settings, key, OnboardingRef(tenant_id, provider_id, "refresh"), now),
        url(settings, key, OnboardingRef(tenant_id, provider_id, "done"), now),
    )
