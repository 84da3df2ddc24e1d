"""Web push (the W3C Push API with VAPID, RFC 8292): notifications to the browsers and
installed apps of a clinic's patients, through each browser vendor's push service.

The clinic's VAPID key pair is made here when none is given: the private key is sealed
in the vault like any credential, and its public key (``application_server_key``,
base64url, uncompressed P-256 point) is a setting, shown with the integration, that the
clinic's patient-facing app passes to ``pushManager.subscribe()``. Subscriptions are
registered per patient through the API (see ``messaging.push``). There is no provider
account to call: the connection test checks the key pair.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field

from clinicbridge.integrations.connector import (
    Connector,
    ConnectorContext,
    Credentials,
    Settings,
    TestResult,
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def private_key(raw: str) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key from its raw base64url form (32 bytes), as browsers' and
    push libraries' tools write it."""
    data = b64url_decode(raw)
    if len(data) != 32:
        raise ValueError("a VAPID private key is 32 bytes, base64url-encoded")
    return ec.derive_private_key(int.from_bytes(data, "big"), ec.SECP256R1())


def public_key(key: ec.EllipticCurvePrivateKey) -> str:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


def new_private_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


class WebPushCredentials(Credentials):
    vapid_private_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{43}$")]


class WebPushSettings(Settings):
    # "mailto:" or "https:" contact the push services may use (RFC 8292 "sub").
    subject: Annotated[str, Field(pattern=r"^(mailto:[^@\s]+@[^@\s]+|https://\S+)$")]
    application_server_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{87}$")]
    ttl_seconds: Annotated[int, Field(ge=0, le=28 * 24 * 3600)] = 24 * 3600
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"


class WebPush(Connector):
    key = "web_push"
    display_name = "Web push (VAPID)"
    category = "messaging"
    credentials_schema = WebPushCredentials
    settings_schema = WebPushSettings

    def complete(self, credentials: dict[str, Any], settings: dict[str, Any]) -> None:
        """Make a key pair when none is given; the public key always follows the private."""
        if not credentials.get("vapid_private_key"):
            credentials["vapid_private_key"] = new_private_key()
        # A bad key keeps the old public key: the credentials' own validation names it.
        with contextlib.suppress(ValueError):
            settings["application_server_key"] = public_key(
                private_key(str(credentials["vapid_private_key"]))
            )

    def test_connection(self, ctx: ConnectorContext) -> TestResult:
        try:
            derived = public_key(private_key(ctx.secret("vapid_private_key")))
        except ValueError:
            return TestResult(False, "the VAPID private key is not a P-256 key")
        if derived != ctx.settings.get("application_server_key"):
            return TestResult(False, "application_server_key does not match the private key")
        return TestResult(True, "VAPID key pair ready")
