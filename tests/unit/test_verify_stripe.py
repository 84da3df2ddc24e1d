"""Stripe webhook signatures, checked against the official ``stripe`` package."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as token
from datetime import UTC, datetime, timedelta

import pytest
import stripe

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import WebhookRequest
from clinicbridge.webhooks.verifiers.stripe import verify

SECRET = "whsec_" + token.token_hex(16)
OLD_SECRET = "whsec_" + token.token_hex(16)


def event_body(created: int) -> bytes:
    event = {
        "id": "evt_1Nabc",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": created,
        "data": {"object": {"id": "pi_1", "object": "payment_intent", "amount": 4200}},
    }
    return json.dumps(event, indent=2).encode()  # Stripe sends pretty-printed JSON


def request(body: bytes, header: str | None) -> WebhookRequest:
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["stripe-signature"] = header
    return WebhookRequest("POST", "https://hub.example/webhooks/int_1", headers, body)


def sdk_header(body: bytes, secret: str, ts: int) -> str:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=ts)
    return str(header)


def hand_signature(body: bytes, secret: str, ts: int) -> str:
    """Stripe's documented scheme, written out independently of both sides."""
    return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


@pytest.fixture
def now() -> datetime:
    # Real time: stripe's own check reads the system clock.
    return datetime.now(UTC).replace(microsecond=0)


def test_accepts_what_the_sdk_signs(now: datetime) -> None:
    ts = int(now.timestamp())
    body = event_body(ts)
    result = verify(request(body, sdk_header(body, SECRET, ts)), [SECRET], now)
    [event] = result.events
    assert event.provider_event_id == "evt_1Nabc"
    assert event.type == "payment_intent.succeeded"
    assert event.occurred_at == now
    assert event.payload["data"]["object"]["amount"] == 4200
    assert result.response is None


def test_hand_signed_header_verifies_in_sdk_and_here(now: datetime) -> None:
    ts = int(now.timestamp())
    body = event_body(ts)
    header = f"t={ts},v1={hand_signature(body, SECRET, ts)}"
    assert stripe.Webhook.construct_event(body, header, SECRET).id == "evt_1Nabc"
    assert verify(request(body, header), [SECRET], now).events[0].provider_event_id == "evt_1Nabc"


def test_tampered_body_is_rejected_here_and_by_sdk(now: datetime) -> None:
    ts = int(now.timestamp())
    body = event_body(ts)
    header = sdk_header(body, SECRET, ts)
    tampered = body.replace(b"4200", b"1")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, header, SECRET)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(tampered, header), [SECRET], now)


def test_wrong_secret_is_rejected(now: datetime) -> None:
    ts = int(now.timestamp())
    body = event_body(ts)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(body, sdk_header(body, OLD_SECRET, ts)), [SECRET], now)


def test_stale_timestamp_is_rejected_here_and_by_sdk(now: datetime) -> None:
    ts = int((now - timedelta(seconds=301)).timestamp())
    body = event_body(ts)
    header = sdk_header(body, SECRET, ts)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, header, SECRET)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(request(body, header), [SECRET], now)


def test_future_timestamp_is_rejected(now: datetime) -> None:
    # stripe-python only bounds the past; a pre-signed future request fails here.
    ts = int((now + timedelta(seconds=301)).timestamp())
    body = event_body(ts)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(request(body, sdk_header(body, SECRET, ts)), [SECRET], now)


def test_timestamp_inside_tolerance_is_accepted(now: datetime) -> None:
    ts = int((now - timedelta(seconds=299)).timestamp())
    body = event_body(ts)
    assert verify(request(body, sdk_header(body, SECRET, ts)), [SECRET], now).events


def test_missing_header_is_named() -> None:
    with pytest.raises(WebhookVerificationError, match="missing header stripe-signature"):
        verify(request(b"{}", None), [SECRET], datetime.now(UTC))


def test_header_without_v1_signature_is_rejected(now: datetime) -> None:
    ts = int(now.timestamp())
    body = event_body(ts)
    v0 = hand_signature(body, SECRET, ts)
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify(request(body, f"t={ts},v0={v0}"), [SECRET], now)


def test_header_without_timestamp_is_rejected(now: datetime) -> None:
    body = event_body(int(now.timestamp()))
    with pytest.raises(WebhookVerificationError, match="no timestamp"):
        verify(request(body, f"v1={'0' * 64}"), [SECRET], now)


def test_non_numeric_timestamp_is_rejected(now: datetime) -> None:
    body = event_body(int(now.timestamp()))
    with pytest.raises(WebhookVerificationError, match="invalid timestamp"):
        verify(request(body, f"t=soon,v1={'0' * 64}"), [SECRET], now)


def test_rotation_header_with_two_signatures_passes_sdk_and_here(now: datetime) -> None:
    # While Stripe rolls a secret it signs with both and sends two v1 entries.
    ts = int(now.timestamp())
    body = event_body(ts)
    header = (
        f"t={ts},v1={hand_signature(body, SECRET, ts)},v1={hand_signature(body, OLD_SECRET, ts)}"
    )
    assert stripe.Webhook.construct_event(body, header, OLD_SECRET).id == "evt_1Nabc"
    assert verify(request(body, header), [OLD_SECRET], now).events


def test_any_configured_secret_may_match(now: datetime) -> None:
    ts = int(now.timestamp())
    body = event_body(ts)
    header = sdk_header(body, OLD_SECRET, ts)
    assert verify(request(body, header), [SECRET, OLD_SECRET], now).events


def test_no_secret_configured_is_rejected(now: datetime) -> None:
    ts = int(now.timestamp())
    body = event_body(ts)
    with pytest.raises(WebhookVerificationError, match="no secret configured"):
        verify(request(body, sdk_header(body, SECRET, ts)), [], now)


def test_signed_body_that_is_not_an_event_is_rejected(now: datetime) -> None:
    ts = int(now.timestamp())
    body = b"not json"
    header = f"t={ts},v1={hand_signature(body, SECRET, ts)}"
    with pytest.raises(WebhookVerificationError, match="not valid JSON"):
        verify(request(body, header), [SECRET], now)


def test_error_detail_carries_no_secret_signature_or_body(now: datetime) -> None:
    ts = int(now.timestamp())
    body = event_body(ts)
    header = sdk_header(body, OLD_SECRET, ts)
    with pytest.raises(WebhookVerificationError) as caught:
        verify(request(body, header), [SECRET], now)
    text = str(caught.value)
    assert SECRET not in text and header.split("v1=")[1] not in text and "4200" not in text
    assert caught.value.status == 401 and caught.value.type_slug == "webhook-verification"
