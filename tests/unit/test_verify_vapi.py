"""Vapi server-message authentication: static secret, Bearer token and HMAC.

``vapi-server-sdk`` (Fern-generated API client) has no webhook verifier, so the
oracle is what Vapi's "Server authentication" docs describe, written out here:
the secret in ``X-Vapi-Secret`` or ``Authorization: Bearer``, or an HMAC
credential (SHA-256, hex by default, payload ``{timestamp}.{body}`` when a
timestamp header is sent).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as random_source
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import WebhookRequest
from clinicbridge.webhooks.verifiers.base import content_id
from clinicbridge.webhooks.verifiers.vapi import verify

SECRET = random_source.token_urlsafe(24)
OLD_SECRET = random_source.token_urlsafe(24)
NOW = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
MESSAGE_MS = NOW_S * 1000 - 1500
CALL_ID = "0f5b8a43-0c1d-4d0e-9a58-2f1b3c4d5e6f"


def server_message(**changes: Any) -> bytes:
    message: dict[str, Any] = {
        "type": "status-update",
        "status": "in-progress",
        "timestamp": MESSAGE_MS,
        "call": {"id": CALL_ID, "orgId": "org-1", "type": "inboundPhoneCall"},
        "customer": {"number": "+393331234567"},
    }
    message.update(changes)
    return json.dumps({"message": message}, separators=(",", ":")).encode()


def hmac_hex(secret: str, content: bytes) -> str:
    return hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


def request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    headers = {"content-type": "application/json", **headers}
    return WebhookRequest("POST", "https://hub.example/webhooks/int_1", headers, body)


def test_accepts_the_x_vapi_secret_header() -> None:
    result = verify(request(server_message(), {"x-vapi-secret": SECRET}), [SECRET], NOW)
    [event] = result.events
    assert event.type == "voice.status-update"
    assert event.payload["message"]["status"] == "in-progress"
    assert result.response is None


def test_accepts_a_bearer_token() -> None:
    headers = {"authorization": f"Bearer {SECRET}"}
    assert verify(request(server_message(), headers), [SECRET], NOW).events


def test_bearer_scheme_is_case_insensitive() -> None:
    headers = {"authorization": f"bearer {SECRET}"}
    assert verify(request(server_message(), headers), [SECRET], NOW).events


def test_accepts_hmac_of_the_body() -> None:
    body = server_message()
    headers = {"x-vapi-signature": hmac_hex(SECRET, body)}
    assert verify(request(body, headers), [SECRET], NOW).events


def test_accepts_hmac_of_timestamp_and_body() -> None:
    body = server_message()
    headers = {
        "x-vapi-timestamp": str(NOW_S),
        "x-vapi-signature": hmac_hex(SECRET, f"{NOW_S}.".encode() + body),
    }
    assert verify(request(body, headers), [SECRET], NOW).events


def test_accepts_a_timestamp_in_milliseconds() -> None:
    body = server_message()
    ms = str(NOW_S * 1000)
    headers = {
        "x-vapi-timestamp": ms,
        "x-vapi-signature": hmac_hex(SECRET, f"{ms}.".encode() + body),
    }
    assert verify(request(body, headers), [SECRET], NOW).events


def test_accepts_vapi_hmac_credential_defaults_with_prefix_and_base64() -> None:
    # An HMAC credential with its default header names, a "sha256=" prefix and base64.
    body = server_message()
    digest = hmac.new(SECRET.encode(), f"{NOW_S}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "x-timestamp": str(NOW_S),
        "x-signature": "sha256=" + base64.b64encode(digest).decode(),
    }
    assert verify(request(body, headers), [SECRET], NOW).events


def test_accepts_the_plain_secret_in_x_vapi_signature() -> None:
    # Older Vapi docs: "Vapi will include this token in the X-Vapi-Signature header".
    assert verify(request(server_message(), {"x-vapi-signature": SECRET}), [SECRET], NOW).events


def test_signature_family_is_not_mixed_with_another_timestamp_header() -> None:
    # x-timestamp belongs to x-signature; beside x-vapi-signature it is not signed content.
    body = server_message()
    headers = {"x-vapi-signature": hmac_hex(SECRET, body), "x-timestamp": str(NOW_S - 3600)}
    assert verify(request(body, headers), [SECRET], NOW).events


def test_event_id_is_call_type_and_message_timestamp() -> None:
    [event] = verify(request(server_message(), {"x-vapi-secret": SECRET}), [SECRET], NOW).events
    assert event.provider_event_id == f"{CALL_ID}:status-update:{MESSAGE_MS}"


def test_event_id_falls_back_to_a_body_hash_without_timestamp() -> None:
    body = server_message(type="end-of-call-report", timestamp=None, endedReason="hangup")
    [event] = verify(request(body, {"x-vapi-secret": SECRET}), [SECRET], NOW).events
    assert event.provider_event_id == f"{CALL_ID}:end-of-call-report:{content_id(body)}"


def test_occurred_at_is_message_timestamp_in_milliseconds() -> None:
    [event] = verify(request(server_message(), {"x-vapi-secret": SECRET}), [SECRET], NOW).events
    assert event.occurred_at == NOW - timedelta(seconds=1.5)


def test_tool_calls_type() -> None:
    body = server_message(type="tool-calls", toolCallList=[{"id": "abc123", "name": "book"}])
    [event] = verify(request(body, {"x-vapi-secret": SECRET}), [SECRET], NOW).events
    assert event.type == "voice.tool-calls"


def test_tampered_body_is_rejected_under_hmac() -> None:
    body = server_message()
    headers = {"x-vapi-signature": hmac_hex(SECRET, body)}
    tampered = body.replace(b"in-progress", b"ended")
    with pytest.raises(WebhookVerificationError, match="no matching secret or signature"):
        verify(request(tampered, headers), [SECRET], NOW)


def test_wrong_x_vapi_secret_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching secret or signature"):
        verify(request(server_message(), {"x-vapi-secret": OLD_SECRET}), [SECRET], NOW)


def test_wrong_bearer_token_is_rejected() -> None:
    headers = {"authorization": f"Bearer {OLD_SECRET}"}
    with pytest.raises(WebhookVerificationError, match="no matching secret or signature"):
        verify(request(server_message(), headers), [SECRET], NOW)


def test_basic_authorization_is_not_a_bearer_token() -> None:
    headers = {"authorization": f"Basic {SECRET}"}
    with pytest.raises(WebhookVerificationError, match="missing header"):
        verify(request(server_message(), headers), [SECRET], NOW)


def test_hmac_with_wrong_secret_is_rejected() -> None:
    body = server_message()
    headers = {"x-vapi-signature": hmac_hex(OLD_SECRET, body)}
    with pytest.raises(WebhookVerificationError, match="no matching secret or signature"):
        verify(request(body, headers), [SECRET], NOW)


def test_stale_timestamp_is_rejected() -> None:
    body = server_message()
    ts = str(NOW_S - 301)
    headers = {
        "x-vapi-timestamp": ts,
        "x-vapi-signature": hmac_hex(SECRET, f"{ts}.".encode() + body),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(request(body, headers), [SECRET], NOW)


def test_future_timestamp_is_rejected() -> None:
    body = server_message()
    ts = str(NOW_S + 301)
    headers = {
        "x-vapi-timestamp": ts,
        "x-vapi-signature": hmac_hex(SECRET, f"{ts}.".encode() + body),
    }
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(request(body, headers), [SECRET], NOW)


def test_timestamp_is_part_of_what_is_signed() -> None:
    body = server_message()
    headers = {
        "x-vapi-timestamp": str(NOW_S + 1),
        "x-vapi-signature": hmac_hex(SECRET, f"{NOW_S}.".encode() + body),
    }
    with pytest.raises(WebhookVerificationError, match="no matching secret or signature"):
        verify(request(body, headers), [SECRET], NOW)


def test_invalid_timestamp_is_rejected() -> None:
    body = server_message()
    ts = "2026-03-04T10:00:00Z"
    headers = {
        "x-vapi-timestamp": ts,
        "x-vapi-signature": hmac_hex(SECRET, f"{ts}.".encode() + body),
    }
    with pytest.raises(WebhookVerificationError, match="invalid timestamp in x-vapi-timestamp"):
        verify(request(body, headers), [SECRET], NOW)


def test_missing_credentials_are_named() -> None:
    with pytest.raises(WebhookVerificationError, match="missing header x-vapi-secret"):
        verify(request(server_message(), {}), [SECRET], NOW)


def test_any_configured_secret_may_match_during_rotation() -> None:
    body = server_message()
    headers = {"x-vapi-signature": hmac_hex(OLD_SECRET, body)}
    assert verify(request(body, headers), [SECRET, OLD_SECRET], NOW).events


def test_no_secret_configured_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no secret configured"):
        verify(request(server_message(), {"x-vapi-secret": SECRET}), [], NOW)


def test_signed_body_that_is_not_a_server_message_is_rejected() -> None:
    body = b'{"type":"status-update"}'
    with pytest.raises(WebhookVerificationError, match="not a Vapi server message"):
        verify(request(body, {"x-vapi-signature": hmac_hex(SECRET, body)}), [SECRET], NOW)


def test_error_detail_carries_no_secret_signature_or_body() -> None:
    body = server_message()
    signature = hmac_hex(OLD_SECRET, body)
    headers = {"x-vapi-secret": OLD_SECRET, "x-vapi-signature": signature}
    with pytest.raises(WebhookVerificationError) as caught:
        verify(request(body, headers), [SECRET], NOW)
    text = str(caught.value)
    assert SECRET not in text and OLD_SECRET not in text and signature not in text
    assert "+393331234567" not in text and caught.value.status == 401
