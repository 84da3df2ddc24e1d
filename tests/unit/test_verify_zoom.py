"""Zoom webhook signatures and the URL-validation challenge.

Zoom has no official Python SDK; the oracle is the algorithm of Zoom's
"Verify webhook events" guide (a Node.js sample), written out here with
``hmac``: ``v0=`` + hex HMAC-SHA256(secret token, ``v0:{timestamp}:{body}``),
and ``encryptedToken`` = hex HMAC-SHA256(secret token, plainToken).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as random_source
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import WebhookRequest
from clinicbridge.webhooks.verifiers.zoom import verify

SECRET_TOKEN = random_source.token_urlsafe(16)
OLD_SECRET_TOKEN = random_source.token_urlsafe(16)
NOW = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
EVENT_TS = int((NOW - timedelta(seconds=2)).timestamp() * 1000)
MEETING_UUID = "4444AAAiAAAAAiAiAiiAii=="
PLAIN_TOKEN = "qgg8vlvZRS6UYooatFL8Aw"


def zoom_signature(secret_token: str, timestamp: str, body: bytes) -> str:
    message = f"v0:{timestamp}:{body.decode()}"
    digest = hmac.new(secret_token.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def meeting_started(**changes: Any) -> bytes:
    event: dict[str, Any] = {
        "event": "meeting.started",
        "event_ts": EVENT_TS,
        "payload": {
            "account_id": "AAAAAABBBB",
            "object": {
                "id": "85746065432",
                "uuid": MEETING_UUID,
                "host_id": "x1yCzABCDEfg23HiJKl4mN",
                "topic": "Dr. Rossi - follow-up",
                "type": 2,
                "start_time": "2026-03-04T09:59:58Z",
                "timezone": "Europe/Rome",
            },
        },
    }
    event.update(changes)
    return json.dumps(event, separators=(",", ":")).encode()


def url_validation(plain_token: str = PLAIN_TOKEN) -> bytes:
    event = {
        "payload": {"plainToken": plain_token},
        "event_ts": EVENT_TS,
        "event": "endpoint.url_validation",
    }
    return json.dumps(event, separators=(",", ":")).encode()


def request(
    body: bytes,
    secret_token: str = SECRET_TOKEN,
    *,
    at: datetime = NOW,
    drop: str | None = None,
) -> WebhookRequest:
    timestamp = str(int(at.timestamp()))
    headers = {
        "content-type": "application/json",
        "x-zm-request-timestamp": timestamp,
        "x-zm-signature": zoom_signature(secret_token, timestamp, body),
    }
    if drop is not None:
        del headers[drop]
    return WebhookRequest("POST", "https://hub.example/webhooks/int_1", headers, body)


def test_accepts_what_zoom_signs() -> None:
    result = verify(request(meeting_started()), [SECRET_TOKEN], NOW)
    [event] = result.events
    assert event.type == "video.meeting.started"
    assert event.payload["payload"]["object"]["topic"] == "Dr. Rossi - follow-up"
    assert result.response is None


def test_occurred_at_is_event_ts_in_milliseconds() -> None:
    [event] = verify(request(meeting_started()), [SECRET_TOKEN], NOW).events
    assert event.occurred_at == NOW - timedelta(seconds=2)


def test_dedupe_id_is_event_uuid_and_event_ts() -> None:
    [event] = verify(request(meeting_started()), [SECRET_TOKEN], NOW).events
    assert event.provider_event_id == f"meeting.started:{MEETING_UUID}:{EVENT_TS}"


def test_a_redelivery_keeps_the_dedupe_id() -> None:
    # Zoom retries with a new request timestamp but the same event_ts.
    body = meeting_started()
    first = verify(request(body), [SECRET_TOKEN], NOW).events[0]
    later = NOW + timedelta(minutes=30)
    retry = verify(request(body, at=later), [SECRET_TOKEN], later).events[0]
    assert first.provider_event_id == retry.provider_event_id


def test_object_without_uuid_falls_back_to_its_id() -> None:
    body = meeting_started(
        event="user.updated", payload={"object": {"id": "KDcuGIm1QgePTO8WbOqwIQ"}}
    )
    [event] = verify(request(body), [SECRET_TOKEN], NOW).events
    assert event.provider_event_id == f"user.updated:KDcuGIm1QgePTO8WbOqwIQ:{EVENT_TS}"


def test_url_validation_is_answered_with_the_encrypted_token() -> None:
    plain = PLAIN_TOKEN
    result = verify(request(url_validation(plain)), [SECRET_TOKEN], NOW)
    expected = hmac.new(SECRET_TOKEN.encode(), plain.encode(), hashlib.sha256).hexdigest()
    assert result.response == {"plainToken": plain, "encryptedToken": expected}
    assert result.events == []


def test_url_validation_is_answered_with_the_secret_that_matched() -> None:
    plain = PLAIN_TOKEN
    result = verify(
        request(url_validation(plain), OLD_SECRET_TOKEN), [SECRET_TOKEN, OLD_SECRET_TOKEN], NOW
    )
    expected = hmac.new(OLD_SECRET_TOKEN.encode(), plain.encode(), hashlib.sha256).hexdigest()
    assert result.response is not None and result.response["encryptedToken"] == expected


def test_unsigned_url_validation_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(url_validation(), OLD_SECRET_TOKEN), [SECRET_TOKEN], NOW)


def test_url_validation_without_plain_token_is_rejected() -> None:
    body = json.dumps({"event": "endpoint.url_validation", "payload": {}}).encode()
    with pytest.raises(WebhookVerificationError, match="plainToken"):
        verify(request(body), [SECRET_TOKEN], NOW)


def test_tampered_body_is_rejected() -> None:
    body = meeting_started()
    signed = request(body)
    tampered = WebhookRequest(
        signed.method,
        signed.url,
        signed.headers,
        body.replace(b"meeting.started", b"meeting.ended"),
    )
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(tampered, [SECRET_TOKEN], NOW)


def test_wrong_secret_token_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(meeting_started(), OLD_SECRET_TOKEN), [SECRET_TOKEN], NOW)


def test_stale_timestamp_is_rejected() -> None:
    body = meeting_started()
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(request(body, at=NOW - timedelta(seconds=301)), [SECRET_TOKEN], NOW)


def test_future_timestamp_is_rejected() -> None:
    body = meeting_started()
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(request(body, at=NOW + timedelta(seconds=301)), [SECRET_TOKEN], NOW)


def test_timestamp_inside_tolerance_is_accepted() -> None:
    body = meeting_started()
    assert verify(request(body, at=NOW - timedelta(seconds=299)), [SECRET_TOKEN], NOW).events
    assert verify(request(body, at=NOW + timedelta(seconds=299)), [SECRET_TOKEN], NOW).events


def test_timestamp_header_is_part_of_what_is_signed() -> None:
    signed = request(meeting_started())
    headers = dict(signed.headers)
    headers["x-zm-request-timestamp"] = str(int(NOW.timestamp()) + 1)
    moved = WebhookRequest(signed.method, signed.url, headers, signed.body)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(moved, [SECRET_TOKEN], NOW)


def test_missing_signature_header_is_named() -> None:
    with pytest.raises(WebhookVerificationError, match="missing header x-zm-signature"):
        verify(request(meeting_started(), drop="x-zm-signature"), [SECRET_TOKEN], NOW)


def test_missing_timestamp_header_is_named() -> None:
    with pytest.raises(WebhookVerificationError, match="missing header x-zm-request-timestamp"):
        verify(request(meeting_started(), drop="x-zm-request-timestamp"), [SECRET_TOKEN], NOW)


def test_signature_without_v0_prefix_is_rejected() -> None:
    signed = request(meeting_started())
    headers = {**signed.headers, "x-zm-signature": signed.headers["x-zm-signature"][3:]}
    with pytest.raises(WebhookVerificationError, match="no v0 signature"):
        verify(WebhookRequest(signed.method, signed.url, headers, signed.body), [SECRET_TOKEN], NOW)


def test_any_configured_secret_may_match_during_rotation() -> None:
    body = meeting_started()
    assert verify(request(body, OLD_SECRET_TOKEN), [SECRET_TOKEN, OLD_SECRET_TOKEN], NOW).events


def test_no_secret_configured_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no secret configured"):
        verify(request(meeting_started()), [], NOW)


def test_error_detail_carries_no_secret_signature_or_body() -> None:
    signed = request(meeting_started(), OLD_SECRET_TOKEN)
    with pytest.raises(WebhookVerificationError) as caught:
        verify(signed, [SECRET_TOKEN], NOW)
    text = str(caught.value)
    assert SECRET_TOKEN not in text and signed.headers["x-zm-signature"][3:] not in text
    assert "Rossi" not in text and caught.value.status == 401
