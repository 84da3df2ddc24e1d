"""SendGrid Event Webhook signatures, checked against the official ``sendgrid`` package."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sendgrid.helpers.eventwebhook import EventWebhook

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import WebhookRequest
from clinicbridge.webhooks.verifiers.sendgrid import verify

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
SIG = "x-twilio-email-event-webhook-signature"
TS = "x-twilio-email-event-webhook-timestamp"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def shown_key(private: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid's settings page shows it: base64 DER, no armour."""
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


KEY = new_key()
OTHER_KEY = new_key()


def batch(ts: int) -> bytes:
    events = [
        {"email": "a@example.com", "timestamp": ts, "event": "delivered", "sg_event_id": "ev1"},
        {"email": "b@example.com", "timestamp": ts - 5, "event": "bounce", "sg_event_id": "ev2"},
        {"email": "c@example.com", "timestamp": ts - 9, "event": "open", "sg_event_id": "ev3"},
    ]
    return json.dumps(events).encode() + b"\r\n"  # SendGrid ends the body with CRLF


def sign(private: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def request(body: bytes, signature: str | None, timestamp: str | None) -> WebhookRequest:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers[SIG] = signature
    if timestamp is not None:
        headers[TS] = timestamp
    return WebhookRequest("POST", "https://hub.example/webhooks/int_2", headers, body)


def sdk_accepts(key: str, body: bytes, signature: str, timestamp: str) -> bool:
    return bool(EventWebhook(key).verify_signature(body.decode(), signature, timestamp))


def signed(ts: datetime = NOW, private: ec.EllipticCurvePrivateKey = KEY) -> WebhookRequest:
    timestamp = str(int(ts.timestamp()))
    body = batch(int(NOW.timestamp()))
    return request(body, sign(private, timestamp, body), timestamp)


def test_batch_signed_with_sendgrid_scheme_passes_sdk_and_here() -> None:
    req = signed()
    assert sdk_accepts(shown_key(KEY), req.body, req.headers[SIG], req.headers[TS])
    events = verify(req, [shown_key(KEY)], NOW).events
    assert [e.provider_event_id for e in events] == ["ev1", "ev2", "ev3"]
    assert [e.type for e in events] == ["email.delivered", "email.bounce", "email.open"]
    assert events[0].occurred_at == NOW
    assert events[1].occurred_at == NOW - timedelta(seconds=5)
    assert events[2].payload["email"] == "c@example.com"


def test_tampered_body_is_rejected_here_and_by_sdk() -> None:
    req = signed()
    tampered = req.body.replace(b"bounce", b"delivered")
    assert not sdk_accepts(shown_key(KEY), tampered, req.headers[SIG], req.headers[TS])
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(tampered, req.headers[SIG], req.headers[TS]), [shown_key(KEY)], NOW)


def test_timestamp_is_part_of_the_signed_payload() -> None:
    req = signed()
    moved = str(int(req.headers[TS]) + 1)
    assert not sdk_accepts(shown_key(KEY), req.body, req.headers[SIG], moved)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(req.body, req.headers[SIG], moved), [shown_key(KEY)], NOW)


def test_wrong_key_is_rejected_here_and_by_sdk() -> None:
    req = signed(private=OTHER_KEY)
    assert not sdk_accepts(shown_key(KEY), req.body, req.headers[SIG], req.headers[TS])
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(req, [shown_key(KEY)], NOW)


def test_any_configured_key_may_match_during_rotation() -> None:
    req = signed(private=OTHER_KEY)
    assert verify(req, [shown_key(KEY), shown_key(OTHER_KEY)], NOW).events


def test_stale_timestamp_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(signed(NOW - timedelta(seconds=301)), [shown_key(KEY)], NOW)


def test_future_timestamp_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(signed(NOW + timedelta(seconds=301)), [shown_key(KEY)], NOW)


def test_timestamp_inside_tolerance_is_accepted() -> None:
    assert verify(signed(NOW + timedelta(seconds=299)), [shown_key(KEY)], NOW).events


def test_missing_signature_header_is_named() -> None:
    req = signed()
    with pytest.raises(WebhookVerificationError, match=f"missing header {SIG}"):
        verify(request(req.body, None, req.headers[TS]), [shown_key(KEY)], NOW)


def test_missing_timestamp_header_is_named() -> None:
    req = signed()
    with pytest.raises(WebhookVerificationError, match=f"missing header {TS}"):
        verify(request(req.body, req.headers[SIG], None), [shown_key(KEY)], NOW)


def test_signature_that_is_not_base64_is_rejected() -> None:
    req = signed()
    with pytest.raises(WebhookVerificationError, match="invalid base64"):
        verify(request(req.body, "not base64!", req.headers[TS]), [shown_key(KEY)], NOW)


def test_pem_key_is_accepted() -> None:
    pem = (
        KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert verify(signed(), [pem], NOW).events


def test_keys_that_are_not_p256_public_keys_are_not_used() -> None:
    rsa_der = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    p384 = shown_key(ec.generate_private_key(ec.SECP384R1()))
    configured = ["garbage", base64.b64encode(rsa_der).decode(), p384]
    with pytest.raises(WebhookVerificationError, match="no valid verification key"):
        verify(signed(), configured, NOW)


def test_event_without_sg_event_id_gets_a_stable_content_id() -> None:
    timestamp = str(int(NOW.timestamp()))
    body = json.dumps([{"event": "spamreport", "timestamp": 1, "email": "x@example.com"}]).encode()
    req = request(body, sign(KEY, timestamp, body), timestamp)
    first = verify(req, [shown_key(KEY)], NOW).events[0]
    again = verify(req, [shown_key(KEY)], NOW).events[0]
    assert first.type == "email.spamreport"
    assert len(first.provider_event_id) == 64 and first.provider_event_id == again.provider_event_id


def test_signed_body_that_is_not_an_array_is_rejected() -> None:
    timestamp = str(int(NOW.timestamp()))
    body = b'{"event": "delivered"}'
    with pytest.raises(WebhookVerificationError, match="not a JSON array"):
        verify(request(body, sign(KEY, timestamp, body), timestamp), [shown_key(KEY)], NOW)


def test_error_detail_carries_no_key_or_body() -> None:
    req = signed(private=OTHER_KEY)
    with pytest.raises(WebhookVerificationError) as caught:
        verify(req, [shown_key(KEY)], NOW)
    text = str(caught.value)
    assert shown_key(KEY) not in text and req.headers[SIG] not in text and "example" not in text
