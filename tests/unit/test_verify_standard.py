"""Standard Webhooks signatures, checked against the ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import json
import secrets as token
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import WebhookRequest
from clinicbridge.webhooks.verifiers.standard import verify

SECRET = "whsec_" + base64.b64encode(token.token_bytes(24)).decode()
OLD_SECRET = "whsec_" + base64.b64encode(token.token_bytes(24)).decode()
MSG_ID = "msg_2Lf5bM1pZb7e"
BODY = json.dumps(
    {
        "type": "email.delivered",
        "created_at": "2026-03-01T09:29:58.123Z",
        "data": {"email_id": "4ef9a417", "to": ["patient@example.com"]},
    }
).encode()


@pytest.fixture
def now() -> datetime:
    # Real time: the package's verify() reads the system clock.
    return datetime.now(UTC).replace(microsecond=0)


def sdk_signature(secret: str, ts: datetime, body: bytes = BODY, msg_id: str = MSG_ID) -> str:
    return standardwebhooks.Webhook(secret).sign(msg_id, ts, body.decode())


def headers(ts: datetime, signature: str, prefix: str = "webhook") -> dict[str, str]:
    return {
        f"{prefix}-id": MSG_ID,
        f"{prefix}-timestamp": str(int(ts.timestamp())),
        f"{prefix}-signature": signature,
    }


def request(hdrs: dict[str, str], body: bytes = BODY) -> WebhookRequest:
    return WebhookRequest(
        "POST",
        "https://hub.example/webhooks/int_3",
        {"content-type": "application/json", **hdrs},
        body,
    )


def test_accepts_what_the_package_signs(now: datetime) -> None:
    result = verify(request(headers(now, sdk_signature(SECRET, now))), [SECRET], now)
    [event] = result.events
    assert event.provider_event_id == MSG_ID
    assert event.type == "email.delivered"
    assert event.occurred_at == datetime(2026, 3, 1, 9, 29, 58, 123000, tzinfo=UTC)
    assert event.payload["data"]["email_id"] == "4ef9a417"


def test_package_verifies_the_request_we_accept(now: datetime) -> None:
    req = request(headers(now, sdk_signature(SECRET, now)))
    assert standardwebhooks.Webhook(SECRET).verify(req.body, dict(req.headers))["type"]
    assert verify(req, [SECRET], now).events


def test_svix_header_names_are_accepted(now: datetime) -> None:
    req = request(headers(now, sdk_signature(SECRET, now), prefix="svix"))
    assert verify(req, [SECRET], now).events[0].provider_event_id == MSG_ID


def test_tampered_body_is_rejected_here_and_by_package(now: datetime) -> None:
    hdrs = headers(now, sdk_signature(SECRET, now))
    tampered = BODY.replace(b"delivered", b"bounced")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(tampered, hdrs)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(hdrs, tampered), [SECRET], now)


def test_message_id_is_signed(now: datetime) -> None:
    hdrs = {**headers(now, sdk_signature(SECRET, now)), "webhook-id": "msg_other"}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(hdrs), [SECRET], now)


def test_wrong_secret_is_rejected(now: datetime) -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(request(headers(now, sdk_signature(OLD_SECRET, now))), [SECRET], now)


def test_stale_timestamp_is_rejected_here_and_by_package(now: datetime) -> None:
    ts = now - timedelta(seconds=301)
    hdrs = headers(ts, sdk_signature(SECRET, ts))
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(BODY, hdrs)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(request(hdrs), [SECRET], now)


def test_future_timestamp_is_rejected_here_and_by_package(now: datetime) -> None:
    ts = now + timedelta(seconds=301)
    hdrs = headers(ts, sdk_signature(SECRET, ts))
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(BODY, hdrs)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(request(hdrs), [SECRET], now)


def test_timestamp_inside_tolerance_is_accepted(now: datetime) -> None:
    ts = now - timedelta(seconds=299)
    assert verify(request(headers(ts, sdk_signature(SECRET, ts))), [SECRET], now).events


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_named(now: datetime, name: str) -> None:
    hdrs = headers(now, sdk_signature(SECRET, now))
    del hdrs[name]
    with pytest.raises(WebhookVerificationError, match=f"missing header {name}"):
        verify(request(hdrs), [SECRET], now)


def test_several_signatures_during_rotation_pass_here_and_in_package(now: datetime) -> None:
    both = f"{sdk_signature(SECRET, now)} {sdk_signature(OLD_SECRET, now)}"
    hdrs = headers(now, both)
    assert standardwebhooks.Webhook(OLD_SECRET).verify(BODY, hdrs)
    assert verify(request(hdrs), [OLD_SECRET], now).events


def test_any_configured_secret_may_match(now: datetime) -> None:
    hdrs = headers(now, sdk_signature(OLD_SECRET, now))
    assert verify(request(hdrs), [SECRET, OLD_SECRET], now).events


def test_other_signature_versions_are_skipped(now: datetime) -> None:
    good = sdk_signature(SECRET, now).split(",", 1)[1]
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify(request(headers(now, f"v1a,{good}")), [SECRET], now)


def test_malformed_entry_does_not_hide_a_good_one(now: datetime) -> None:
    hdrs = headers(now, f"v1,%%% {sdk_signature(SECRET, now)}")
    assert verify(request(hdrs), [SECRET], now).events


def test_secret_without_prefix_is_accepted_like_the_package(now: datetime) -> None:
    bare = SECRET.removeprefix("whsec_")
    hdrs = headers(now, sdk_signature(bare, now))
    assert standardwebhooks.Webhook(SECRET).verify(BODY, hdrs)
    assert verify(request(hdrs), [bare], now).events


def test_occurred_at_falls_back_to_the_timestamp_header(now: datetime) -> None:
    body = json.dumps({"type": "contact.created", "data": {}}).encode()
    hdrs = headers(now, sdk_signature(SECRET, now, body))
    assert verify(request(hdrs, body), [SECRET], now).events[0].occurred_at == now


def test_non_numeric_timestamp_is_rejected(now: datetime) -> None:
    hdrs = {**headers(now, sdk_signature(SECRET, now)), "webhook-timestamp": "1e9"}
    with pytest.raises(WebhookVerificationError, match="invalid timestamp"):
        verify(request(hdrs), [SECRET], now)


def test_error_detail_carries_no_secret_or_body(now: datetime) -> None:
    signature = sdk_signature(OLD_SECRET, now)
    with pytest.raises(WebhookVerificationError) as caught:
        verify(request(headers(now, signature)), [SECRET], now)
    text = str(caught.value)
    assert SECRET not in text and signature not in text and "patient" not in text


def test_header_families_are_not_mixed(now: datetime) -> None:
    hdrs = headers(now, sdk_signature(SECRET, now))
    hdrs["svix-id"] = hdrs.pop("webhook-id")
    with pytest.raises(WebhookVerificationError, match="missing header webhook-id"):
        verify(request(hdrs), [SECRET], now)
