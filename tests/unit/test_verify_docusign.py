"""DocuSign Connect HMAC signatures, signed with DocuSign's own reference code.

``docusign-esign`` has no webhook helper; DocuSign's Connect HMAC guide gives a
Python ``ComputeHash`` / ``HashIsValid`` pair, reproduced below as the oracle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as random_source
from datetime import UTC, datetime
from typing import Any

import pytest

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import WebhookRequest
from clinicbridge.webhooks.verifiers.docusign import verify

# Connect HMAC keys are shown as base64 text and used as that text, not decoded.
KEY = base64.b64encode(random_source.token_bytes(32)).decode()
OLD_KEY = base64.b64encode(random_source.token_bytes(32)).decode()
NOW = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
ENVELOPE = "93be49ab-c4a2-4d4a-8b1e-3ad5a0ac2c7f"


# -- DocuSign's reference code (Connect HMAC guide, Python), names kept ----------------
def ComputeHash(secret: bytes, payload: bytes) -> bytes:
    hashBytes = hmac.new(secret, msg=payload, digestmod=hashlib.sha256).digest()
    base64Hash = base64.b64encode(hashBytes)
    return base64Hash


def HashIsValid(secret: bytes, payload: bytes, verify: bytes) -> bool:
    return hmac.compare_digest(verify, ComputeHash(secret, payload))


# -----------------------------------------------------------------------------------------


def sim_body(**changes: Any) -> bytes:
    """A Connect JSON (SIM) notification, as DocuSign sends it: compact JSON."""
    event: dict[str, Any] = {
        "event": "envelope-completed",
        "apiVersion": "v2.1",
        "uri": f"/restapi/v2.1/accounts/9a8b/envelopes/{ENVELOPE}",
        "retryCount": 0,
        "configurationId": 10418060,
        "generatedDateTime": "2026-03-04T09:59:58.1234567Z",
        "data": {"accountId": "9a8b", "userId": "u-1", "envelopeId": ENVELOPE},
    }
    event.update(changes)
    return json.dumps(event, separators=(",", ":")).encode()


def sign(body: bytes, *keys: str) -> dict[str, str]:
    """One X-DocuSign-Signature-<n> header per active key, as DocuSign sends them."""
    headers = {"x-authorization-digest": "HMACSHA256", "content-type": "application/json"}
    for n, key in enumerate(keys, start=1):
        headers[f"x-docusign-signature-{n}"] = ComputeHash(key.encode(), body).decode()
    return headers


def request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    return WebhookRequest("POST", "https://hub.example/webhooks/int_1", headers, body)


def test_accepts_what_docusign_reference_code_signs() -> None:
    body = sim_body()
    headers = sign(body, KEY)
    assert HashIsValid(KEY.encode(), body, headers["x-docusign-signature-1"].encode())
    result = verify(request(body, headers), [KEY], NOW)
    [event] = result.events
    assert event.type == "esign.envelope-completed"
    assert event.payload["data"]["envelopeId"] == ENVELOPE
    assert result.response is None


def test_occurred_at_is_generated_date_time_in_utc() -> None:
    [event] = verify(request(sim_body(), sign(sim_body(), KEY)), [KEY], NOW).events
    assert event.occurred_at == datetime(2026, 3, 4, 9, 59, 58, 123456, tzinfo=UTC)


def test_dedupe_id_combines_event_envelope_and_generated_time() -> None:
    [event] = verify(request(sim_body(), sign(sim_body(), KEY)), [KEY], NOW).events
    assert event.provider_event_id == f"envelope-completed:{ENVELOPE}:2026-03-04T09:59:58.1234567Z"


def test_a_retry_has_the_same_dedupe_id() -> None:
    first, retry = sim_body(), sim_body(retryCount=1)
    a = verify(request(first, sign(first, KEY)), [KEY], NOW).events[0]
    b = verify(request(retry, sign(retry, KEY)), [KEY], NOW).events[0]
    assert a.provider_event_id == b.provider_event_id


def test_body_event_id_is_preferred_when_present() -> None:
    body = sim_body(eventId="c1f0e3b2-evt")
    [event] = verify(request(body, sign(body, KEY)), [KEY], NOW).events
    assert event.provider_event_id == "c1f0e3b2-evt"


def test_recipient_events_of_one_envelope_do_not_collide() -> None:
    data = {"accountId": "9a8b", "envelopeId": ENVELOPE}
    one = sim_body(event="recipient-completed", data={**data, "recipientId": "1"})
    two = sim_body(event="recipient-completed", data={**data, "recipientId": "2"})
    a = verify(request(one, sign(one, KEY)), [KEY], NOW).events[0]
    b = verify(request(two, sign(two, KEY)), [KEY], NOW).events[0]
    assert a.provider_event_id != b.provider_event_id


def test_tampered_body_is_rejected_here_and_by_reference_code() -> None:
    body = sim_body()
    headers = sign(body, KEY)
    tampered = body.replace(b"envelope-completed", b"envelope-voided")
    assert not HashIsValid(KEY.encode(), tampered, headers["x-docusign-signature-1"].encode())
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(tampered, headers), [KEY], NOW)


def test_wrong_key_is_rejected() -> None:
    body = sim_body()
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(body, sign(body, OLD_KEY)), [KEY], NOW)


def test_missing_signature_header_is_named() -> None:
    with pytest.raises(WebhookVerificationError, match="missing header x-docusign-signature-1"):
        verify(request(sim_body(), {"content-type": "application/json"}), [KEY], NOW)


def test_any_header_may_match_any_key() -> None:
    # Two keys active at DocuSign: our key is the one in the second header.
    body = sim_body()
    assert verify(request(body, sign(body, OLD_KEY, KEY)), [KEY], NOW).events


def test_any_configured_key_may_match_during_rotation() -> None:
    body = sim_body()
    assert verify(request(body, sign(body, OLD_KEY)), [KEY, OLD_KEY], NOW).events


def test_a_malformed_header_does_not_hide_a_good_one() -> None:
    body = sim_body()
    headers = sign(body, OLD_KEY, KEY)
    headers["x-docusign-signature-1"] = "not base64!"
    assert verify(request(body, headers), [KEY], NOW).events


def test_signature_header_numbers_beyond_100_are_ignored() -> None:
    body = sim_body()
    headers = {"x-docusign-signature-101": ComputeHash(KEY.encode(), body).decode()}
    with pytest.raises(WebhookVerificationError, match="missing header"):
        verify(request(body, headers), [KEY], NOW)


def test_no_timestamp_means_an_old_request_still_verifies() -> None:
    # DocuSign signs no time: replays are stopped by dedupe, not by a window.
    body = sim_body(generatedDateTime="2020-01-01T00:00:00.0000000Z")
    assert verify(request(body, sign(body, KEY)), [KEY], NOW).events


def test_signed_xml_notification_is_refused_as_not_json() -> None:
    body = b"<DocuSignEnvelopeInformation><EnvelopeStatus/></DocuSignEnvelopeInformation>"
    with pytest.raises(WebhookVerificationError, match="not valid JSON"):
        verify(request(body, sign(body, KEY)), [KEY], NOW)


def test_no_key_configured_is_rejected() -> None:
    body = sim_body()
    with pytest.raises(WebhookVerificationError, match="no secret configured"):
        verify(request(body, sign(body, KEY)), [], NOW)


def test_error_detail_carries_no_key_signature_or_body() -> None:
    body = sim_body()
    headers = sign(body, OLD_KEY)
    with pytest.raises(WebhookVerificationError) as caught:
        verify(request(body, headers), [KEY], NOW)
    text = str(caught.value)
    assert KEY not in text and headers["x-docusign-signature-1"] not in text
    assert ENVELOPE not in text and caught.value.status == 401
