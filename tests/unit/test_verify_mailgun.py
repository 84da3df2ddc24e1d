"""Mailgun webhook signatures, signed the way Mailgun's "Securing Webhooks" page says.

The official ``mailgun`` SDK has no verifier, so the oracle is the documented
algorithm written out here with ``hmac``: concatenate timestamp and token with
no separator, HMAC-SHA256 with the webhook signing key, compare the hexdigest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as token_source
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import WebhookRequest
from clinicbridge.webhooks.verifiers.mailgun import verify

SIGNING_KEY = "key-" + token_source.token_hex(16)
OLD_SIGNING_KEY = "key-" + token_source.token_hex(16)
PARENT_KEY = "key-" + token_source.token_hex(16)
NOW = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """Mailgun's documented check, literally: hmac over timestamp + token, hexdigest."""
    return hmac.new(
        key=signing_key.encode(), msg=(timestamp + token).encode(), digestmod=hashlib.sha256
    ).hexdigest()


def webhook(
    key: str = SIGNING_KEY,
    *,
    at: datetime = NOW,
    event: str = "delivered",
    token: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    timestamp = str(int(at.timestamp()))
    token = token or token_source.token_hex(25)  # Mailgun tokens are 50 characters
    event_data: dict[str, Any] = {
        "id": "CPgfbmQMTCKtHW6uIWtuVe",
        "event": event,
        "timestamp": at.timestamp() - 1.5,
        "recipient": "patient@example.com",
        "message": {"headers": {"message-id": "20260304.1@mg.clinic.example"}},
    }
    event_data.update(extra or {})
    return {
        "signature": {
            "timestamp": timestamp,
            "token": token,
            "signature": mailgun_signature(key, timestamp, token),
        },
        "event-data": event_data,
    }


def request(body: dict[str, Any] | bytes) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    return WebhookRequest("POST", "https://hub.example/webhooks/int_1", headers, raw)


def test_accepts_a_documented_signature() -> None:
    body = webhook()
    result = verify(request(body), [SIGNING_KEY], NOW)
    [event] = result.events
    assert event.type == "email.delivered"
    assert event.payload == body
    assert result.response is None


def test_dedupe_id_is_the_single_use_token() -> None:
    body = webhook(token="e0b5477167110d68991efc6b9f89f0a11066af27834600e123")
    [event] = verify(request(body), [SIGNING_KEY], NOW).events
    assert event.provider_event_id == "e0b5477167110d68991efc6b9f89f0a11066af27834600e123"


def test_occurred_at_comes_from_event_data_timestamp() -> None:
    [event] = verify(request(webhook()), [SIGNING_KEY], NOW).events
    assert event.occurred_at == NOW - timedelta(seconds=1.5)
    assert event.occurred_at.tzinfo is not None


def test_failed_event_keeps_its_severity_in_the_payload() -> None:
    body = webhook(event="failed", extra={"severity": "permanent", "reason": "bounce"})
    [event] = verify(request(body), [SIGNING_KEY], NOW).events
    assert event.type == "email.failed"
    assert event.payload["event-data"]["severity"] == "permanent"


@pytest.mark.parametrize("name", ["opened", "clicked", "complained", "unsubscribed"])
def test_event_type_is_prefixed_with_email(name: str) -> None:
    [event] = verify(request(webhook(event=name)), [SIGNING_KEY], NOW).events
    assert event.type == f"email.{name}"


def test_tampered_token_is_rejected() -> None:
    body = webhook()
    body["signature"]["token"] = body["signature"]["token"][:-1] + "x"
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_tampered_timestamp_is_rejected() -> None:
    body = webhook()
    body["signature"]["timestamp"] = str(int(body["signature"]["timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_event_data_is_not_covered_by_mailgun_signature() -> None:
    # Documents the scheme's limit: only timestamp + token are signed, which is
    # why the token (single-use) is the dedupe id.
    body = webhook()
    body["event-data"]["event"] = "complained"
    assert verify(request(body), [SIGNING_KEY], NOW).events[0].type == "email.complained"


def test_wrong_key_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(webhook(OLD_SIGNING_KEY)), [SIGNING_KEY], NOW)


def test_stale_timestamp_is_rejected() -> None:
    body = webhook(at=NOW - timedelta(seconds=301))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_future_timestamp_is_rejected() -> None:
    body = webhook(at=NOW + timedelta(seconds=301))
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_timestamp_inside_tolerance_is_accepted() -> None:
    assert verify(request(webhook(at=NOW - timedelta(seconds=299))), [SIGNING_KEY], NOW).events
    assert verify(request(webhook(at=NOW + timedelta(seconds=299))), [SIGNING_KEY], NOW).events


def test_missing_signature_object_is_rejected() -> None:
    body = webhook()
    del body["signature"]
    with pytest.raises(WebhookVerificationError, match="missing signature object"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_missing_token_is_named() -> None:
    body = webhook()
    del body["signature"]["token"]
    with pytest.raises(WebhookVerificationError, match=r"missing signature\.token"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_missing_signature_value_is_named() -> None:
    body = webhook()
    del body["signature"]["signature"]
    with pytest.raises(WebhookVerificationError, match=r"missing signature\.signature"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_non_numeric_timestamp_is_rejected() -> None:
    body = webhook()
    body["signature"]["timestamp"] = "soon"
    with pytest.raises(WebhookVerificationError, match="invalid timestamp"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_body_that_is_not_json_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="not JSON"):
        verify(request(b"timestamp=1&token=x&signature=y"), [SIGNING_KEY], NOW)


def test_any_configured_key_may_match_during_rotation() -> None:
    body = webhook(OLD_SIGNING_KEY)
    assert verify(request(body), [SIGNING_KEY, OLD_SIGNING_KEY], NOW).events


def test_subaccount_parent_signature_is_accepted() -> None:
    body = webhook("key-of-the-subaccount")
    sig = body["signature"]
    sig["parent-signature"] = mailgun_signature(PARENT_KEY, sig["timestamp"], sig["token"])
    assert verify(request(body), [PARENT_KEY], NOW).events


def test_no_key_configured_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no secret configured"):
        verify(request(webhook()), [], NOW)


def test_signed_body_without_event_data_is_rejected() -> None:
    body = webhook()
    del body["event-data"]
    with pytest.raises(WebhookVerificationError, match="no event-data"):
        verify(request(body), [SIGNING_KEY], NOW)


def test_error_detail_carries_no_key_signature_or_body() -> None:
    body = webhook(OLD_SIGNING_KEY)
    with pytest.raises(WebhookVerificationError) as caught:
        verify(request(body), [SIGNING_KEY], NOW)
    text = str(caught.value)
    for leaked in (SIGNING_KEY, body["signature"]["signature"], body["signature"]["token"]):
        assert leaked not in text
    assert "patient@example.com" not in text
    assert caught.value.status == 401
