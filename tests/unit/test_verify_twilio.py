"""Twilio request signatures, checked against the official ``twilio`` package."""

from __future__ import annotations

import hashlib
import json
import secrets as token
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import WebhookRequest
from clinicbridge.webhooks.verifiers.twilio import verify

TOKEN = token.token_hex(16)
OLD_TOKEN = token.token_hex(16)
URL = "https://hub.example/webhooks/int_1?clinic=north"
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
FORM = "application/x-www-form-urlencoded"

INBOUND = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "+15551230001",
    "To": "+15551230002",
    "Body": "Can I move my appointment to 3 pm? Ça va & 100% ✓",
    "NumMedia": "0",
    "SmsStatus": "received",
}
STATUS = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "MessageStatus": "delivered",
    "SmsStatus": "delivered",
    "ErrorCode": "",  # Twilio sends blank fields, and they are signed
    "To": "+15551230002",
}


class MultiDict(dict[str, list[str]]):
    """What a framework hands the SDK for repeated form fields."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def form_request(
    params: dict[str, str], signature: str | None, url: str = URL, **extra: str
) -> WebhookRequest:
    headers = {"content-type": FORM, **extra}
    if signature is not None:
        headers["x-twilio-signature"] = signature
    return WebhookRequest("POST", url, headers, urlencode(params).encode())


def json_request(body: bytes, signature: str, url: str) -> WebhookRequest:
    headers = {"content-type": "application/json", "x-twilio-signature": signature}
    return WebhookRequest("POST", url, headers, body)


def test_inbound_sms_signed_by_sdk_is_accepted() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND)
    [event] = verify(form_request(INBOUND, signature), [TOKEN], NOW).events
    assert event.type == "message.inbound"
    assert event.provider_event_id == "SM0123456789abcdef0123456789abcdef:inbound"
    assert event.payload["Body"] == INBOUND["Body"]
    assert event.occurred_at is None


def test_status_callback_is_message_status_with_status_in_id() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, STATUS)
    [event] = verify(form_request(STATUS, signature), [TOKEN], NOW).events
    assert event.type == "message.status"
    assert event.provider_event_id == "SM0123456789abcdef0123456789abcdef:delivered"
    assert event.payload["ErrorCode"] == ""


def test_sdk_validates_the_request_we_accept() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND)
    request = form_request(INBOUND, signature)
    assert RequestValidator(TOKEN).validate(request.url, INBOUND, signature)
    assert verify(request, [TOKEN], NOW).events


def test_tampered_form_field_is_rejected_here_and_by_sdk() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND)
    tampered = {**INBOUND, "Body": "STOP"}
    assert not RequestValidator(TOKEN).validate(URL, tampered, signature)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(form_request(tampered, signature), [TOKEN], NOW)


def test_added_form_field_is_rejected() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(form_request({**INBOUND, "MessageStatus": "failed"}, signature), [TOKEN], NOW)


def test_wrong_token_is_rejected() -> None:
    signature = RequestValidator(OLD_TOKEN).compute_signature(URL, INBOUND)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(form_request(INBOUND, signature), [TOKEN], NOW)


def test_old_token_passes_during_rotation() -> None:
    signature = RequestValidator(OLD_TOKEN).compute_signature(URL, INBOUND)
    assert verify(form_request(INBOUND, signature), [TOKEN, OLD_TOKEN], NOW).events


def test_missing_header_is_named() -> None:
    with pytest.raises(WebhookVerificationError, match="missing header x-twilio-signature"):
        verify(form_request(INBOUND, None), [TOKEN], NOW)


def test_no_timestamp_so_a_replay_verifies_and_dedupe_must_catch_it() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND)
    first = verify(form_request(INBOUND, signature), [TOKEN], NOW).events[0]
    later = NOW + timedelta(days=30)
    again = verify(form_request(INBOUND, signature), [TOKEN], later).events[0]
    assert again.provider_event_id == first.provider_event_id


def test_url_behind_proxy_must_be_the_public_one() -> None:
    public = "https://hub.example/webhooks/int_1"
    internal = "http://127.0.0.1:8000/webhooks/int_1"
    signature = RequestValidator(TOKEN).compute_signature(public, INBOUND)
    assert not RequestValidator(TOKEN).validate(internal, INBOUND, signature)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(form_request(INBOUND, signature, url=internal), [TOKEN], NOW)
    assert verify(form_request(INBOUND, signature, url=public), [TOKEN], NOW).events


def test_query_string_is_signed() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND)
    other = URL.replace("clinic=north", "clinic=south")
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(form_request(INBOUND, signature, url=other), [TOKEN], NOW)


def test_default_port_in_signed_url_is_tolerated_like_the_sdk() -> None:
    signature = RequestValidator(TOKEN).compute_signature(
        "https://hub.example:443/webhooks/int_1?clinic=north", INBOUND
    )
    assert RequestValidator(TOKEN).validate(URL, INBOUND, signature)
    assert verify(form_request(INBOUND, signature), [TOKEN], NOW).events


def test_repeated_field_values_are_signed_sorted_like_the_sdk() -> None:
    params = [
        ("To", "+15551230002"),
        ("MediaUrl", "https://b.example"),
        ("MediaUrl", "https://a.example"),
    ]
    multi = MultiDict(To=["+15551230002"], MediaUrl=["https://b.example", "https://a.example"])
    signature = RequestValidator(TOKEN).compute_signature(URL, multi)
    request = WebhookRequest(
        "POST",
        URL,
        {"content-type": FORM, "x-twilio-signature": signature},
        urlencode(params).encode(),
    )
    [event] = verify(request, [TOKEN], NOW).events
    assert event.payload["MediaUrl"] == ["https://b.example", "https://a.example"]


def test_json_body_signed_through_body_hash_is_accepted() -> None:
    body = json.dumps({"MessageSid": "SMjson", "MessageStatus": "read"}).encode()
    url = f"{URL}&bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    assert RequestValidator(TOKEN).validate(url, body.decode(), signature)
    [event] = verify(json_request(body, signature, url), [TOKEN], NOW).events
    assert event.provider_event_id == "SMjson:read"


def test_json_body_that_does_not_match_its_hash_is_rejected_here_and_by_sdk() -> None:
    body = json.dumps({"MessageSid": "SMjson", "MessageStatus": "read"}).encode()
    url = f"{URL}&bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    tampered = body.replace(b"read", b"failed")
    assert not RequestValidator(TOKEN).validate(url, tampered.decode(), signature)
    with pytest.raises(WebhookVerificationError, match="body does not match bodySHA256"):
        verify(json_request(tampered, signature, url), [TOKEN], NOW)


def test_json_body_without_body_hash_is_not_trusted() -> None:
    # The signature would cover the URL only: the body could be anything.
    body = json.dumps({"MessageSid": "SMjson", "MessageStatus": "read"}).encode()
    signature = RequestValidator(TOKEN).compute_signature(URL, {})
    with pytest.raises(WebhookVerificationError, match="unsigned body"):
        verify(json_request(body, signature, URL), [TOKEN], NOW)


def test_shared_key_hmac_sha256_named_in_settings_header_is_accepted() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND, algorithm="HMAC_SHA256")
    settings = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert RequestValidator(TOKEN).validate(URL, INBOUND, signature, algorithm="HMAC_SHA256")
    request = form_request(INBOUND, signature, **{"x-twilio-webhooks-signature-settings": settings})
    assert verify(request, [TOKEN], NOW).events


def test_sha256_signature_without_settings_header_is_rejected() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND, algorithm="HMAC_SHA256")
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(form_request(INBOUND, signature), [TOKEN], NOW)


def test_unsupported_algorithm_is_rejected() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, INBOUND)
    settings = "key=k,algorithm=HMAC_MD5"
    request = form_request(INBOUND, signature, **{"x-twilio-webhooks-signature-settings": settings})
    with pytest.raises(WebhookVerificationError, match="unsupported signature algorithm"):
        verify(request, [TOKEN], NOW)


def test_error_detail_carries_no_token_or_body() -> None:
    signature = RequestValidator(OLD_TOKEN).compute_signature(URL, INBOUND)
    with pytest.raises(WebhookVerificationError) as caught:
        verify(form_request(INBOUND, signature), [TOKEN], NOW)
    text = str(caught.value)
    assert TOKEN not in text and signature not in text and "appointment" not in text
