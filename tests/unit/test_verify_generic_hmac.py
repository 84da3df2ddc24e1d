"""Generic HMAC-SHA256 webhooks: ``x-signature: [sha256=]<hex>``, optional ``x-timestamp``.

No provider stands behind this scheme, so the oracle is a sender written out
here with ``hmac``, the way GitHub-style and timestamped senders sign.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets as random_source
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import Verifier, WebhookRequest
from clinicbridge.webhooks.verifiers.base import content_id
from clinicbridge.webhooks.verifiers.generic_hmac import verify

SECRET = random_source.token_hex(32)
OLD_SECRET = random_source.token_hex(32)
NOW = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())


def event_body(**fields: Any) -> bytes:
    event: dict[str, Any] = {"id": "evt_42", "type": "lab.result_ready", "patient_ref": "P-778"}
    event.update(fields)
    return json.dumps(event).encode()


def sign(body: bytes, secret: str = SECRET, *, timestamp: int | None = None) -> dict[str, str]:
    """A sender: hex HMAC-SHA256 of the body, or of "<timestamp>.<body>" when it stamps."""
    if timestamp is None:
        return {"x-signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}
    signed = f"{timestamp}.".encode() + body
    return {
        "x-timestamp": str(timestamp),
        "x-signature": hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest(),
    }


def request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    headers = {"content-type": "application/json", **headers}
    return WebhookRequest("POST", "https://hub.example/webhooks/int_1", headers, body)


def test_accepts_hmac_of_the_body() -> None:
    body = event_body()
    result = verify(request(body, sign(body)), [SECRET], NOW)
    [event] = result.events
    assert event.provider_event_id == "evt_42"
    assert event.type == "lab.result_ready"
    assert event.occurred_at is None
    assert event.payload["patient_ref"] == "P-778"
    assert result.response is None


def test_accepts_a_sha256_prefixed_signature() -> None:
    body = event_body()
    headers = {"x-signature": "sha256=" + sign(body)["x-signature"]}
    assert verify(request(body, headers), [SECRET], NOW).events


def test_accepts_an_upper_case_hex_signature() -> None:
    body = event_body()
    headers = {"x-signature": sign(body)["x-signature"].upper()}
    assert verify(request(body, headers), [SECRET], NOW).events


def test_accepts_hmac_of_timestamp_and_body() -> None:
    body = event_body()
    [event] = verify(request(body, sign(body, timestamp=NOW_S)), [SECRET], NOW).events
    assert event.occurred_at == NOW


def test_signature_header_name_is_configurable() -> None:
    body = event_body()
    headers = {"x-hub-signature-256": "sha256=" + sign(body)["x-signature"]}
    github_style: Verifier = functools.partial(verify, signature_header="X-Hub-Signature-256")
    assert github_style(request(body, headers), [SECRET], NOW).events


def test_timestamp_header_name_is_configurable() -> None:
    body = event_body()
    signed = sign(body, timestamp=NOW_S)
    headers = {"x-signature": signed["x-signature"], "x-acme-time": signed["x-timestamp"]}
    assert verify(request(body, headers), [SECRET], NOW, timestamp_header="x-acme-time").events


def test_tampered_body_is_rejected() -> None:
    body = event_body()
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(body.replace(b"P-778", b"P-779"), sign(body)), [SECRET], NOW)


def test_wrong_secret_is_rejected() -> None:
    body = event_body()
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(body, sign(body, OLD_SECRET)), [SECRET], NOW)


def test_stale_timestamp_is_rejected() -> None:
    body = event_body()
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(request(body, sign(body, timestamp=NOW_S - 301)), [SECRET], NOW)


def test_future_timestamp_is_rejected() -> None:
    body = event_body()
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(request(body, sign(body, timestamp=NOW_S + 301)), [SECRET], NOW)


def test_timestamp_inside_tolerance_is_accepted() -> None:
    body = event_body()
    assert verify(request(body, sign(body, timestamp=NOW_S - 299)), [SECRET], NOW).events
    assert verify(request(body, sign(body, timestamp=NOW_S + 299)), [SECRET], NOW).events


def test_timestamp_is_part_of_what_is_signed() -> None:
    body = event_body()
    headers = {**sign(body, timestamp=NOW_S), "x-timestamp": str(NOW_S + 1)}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(body, headers), [SECRET], NOW)


def test_dropping_the_timestamp_header_does_not_pass() -> None:
    body = event_body()
    headers = sign(body, timestamp=NOW_S - 3600)
    del headers["x-timestamp"]
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(body, headers), [SECRET], NOW)


def test_invalid_timestamp_is_rejected() -> None:
    body = event_body()
    headers = {**sign(body), "x-timestamp": "yesterday"}
    with pytest.raises(WebhookVerificationError, match="invalid timestamp in x-timestamp"):
        verify(request(body, headers), [SECRET], NOW)


def test_missing_signature_header_is_named() -> None:
    with pytest.raises(WebhookVerificationError, match="missing header x-signature"):
        verify(request(event_body(), {}), [SECRET], NOW)


def test_any_configured_secret_may_match_during_rotation() -> None:
    body = event_body()
    assert verify(request(body, sign(body, OLD_SECRET)), [SECRET, OLD_SECRET], NOW).events


def test_no_secret_configured_is_rejected() -> None:
    body = event_body()
    with pytest.raises(WebhookVerificationError, match="no secret configured"):
        verify(request(body, sign(body)), [], NOW)


def test_event_id_header_wins_over_body_id() -> None:
    body = event_body()
    headers = {**sign(body), "x-event-id": "delivery-7"}
    assert verify(request(body, headers), [SECRET], NOW).events[0].provider_event_id == "delivery-7"


def test_event_id_falls_back_to_a_hash_of_the_body() -> None:
    body = event_body(id=None)
    [event] = verify(request(body, sign(body)), [SECRET], NOW).events
    assert event.provider_event_id == content_id(body)


def test_retry_with_a_new_timestamp_keeps_the_hash_id() -> None:
    body = event_body(id=None)
    first = verify(request(body, sign(body, timestamp=NOW_S)), [SECRET], NOW).events[0]
    later = NOW + timedelta(minutes=10)
    retry_headers = sign(body, timestamp=NOW_S + 600)
    retry = verify(request(body, retry_headers), [SECRET], later).events[0]
    assert first.provider_event_id == retry.provider_event_id


def test_numeric_body_id_is_used_as_text() -> None:
    body = event_body(id=1234)
    assert verify(request(body, sign(body)), [SECRET], NOW).events[0].provider_event_id == "1234"


def test_type_defaults_to_generic_event() -> None:
    body = event_body(type=None)
    assert verify(request(body, sign(body)), [SECRET], NOW).events[0].type == "generic.event"


def test_json_array_body_is_kept_under_data() -> None:
    body = b'[{"a":1},{"a":2}]'
    [event] = verify(request(body, sign(body)), [SECRET], NOW).events
    assert event.payload == {"data": [{"a": 1}, {"a": 2}]}
    assert event.type == "generic.event"


def test_signed_body_that_is_not_json_is_rejected() -> None:
    body = b"plain text"
    with pytest.raises(WebhookVerificationError, match="not valid JSON"):
        verify(request(body, sign(body)), [SECRET], NOW)


def test_error_detail_carries_no_secret_signature_or_body() -> None:
    body = event_body()
    headers = sign(body, OLD_SECRET)
    with pytest.raises(WebhookVerificationError) as caught:
        verify(request(body, headers), [SECRET], NOW)
    text = str(caught.value)
    assert SECRET not in text and headers["x-signature"] not in text and "P-778" not in text
    assert caught.value.status == 401
