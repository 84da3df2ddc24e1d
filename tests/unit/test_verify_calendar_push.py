"""Calendar push verifiers: Google channel tokens and Graph clientState / validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers import google_calendar, microsoft_graph
from clinicbridge.webhooks.verifiers.base import WebhookRequest

NOW = datetime(2026, 12, 3, tzinfo=UTC)
SECRET, OLD = "whsec_current", "whsec_previous"
URL = "https://clinic.example/webhooks/int_1"


def google(**headers: str) -> WebhookRequest:
    base = {
        "x-goog-channel-id": "chan-1",
        "x-goog-channel-token": SECRET,
        "x-goog-resource-id": "res-1",
        "x-goog-resource-state": "exists",
        "x-goog-message-number": "7",
    }
    base.update({k.lower().replace("_", "-"): v for k, v in headers.items()})
    return WebhookRequest("POST", URL, {k: v for k, v in base.items() if v}, b"")


def test_google_notification_is_verified_by_its_channel_token() -> None:
    (event,) = google_calendar.verify(google(), [SECRET], NOW).events
    assert event.provider_event_id == "chan-1:7" and event.type == "calendar.changed"
    assert event.payload["resource_state"] == "exists" and event.payload["message_number"] == 7


def test_google_previous_secret_verifies_during_rotation() -> None:
    assert google_calendar.verify(google(x_goog_channel_token=OLD), [SECRET, OLD], NOW).events


@pytest.mark.parametrize(
    "headers",
    [
        {"x_goog_channel_token": "whsec_wrong"},
        {"x_goog_channel_token": ""},
        {"x_goog_channel_id": ""},
        {"x_goog_message_number": "seven"},
        {"x_goog_resource_state": "deleted"},
    ],
)
def test_google_refuses(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        google_calendar.verify(google(**headers), [SECRET], NOW)


def test_google_without_a_secret_refuses() -> None:
    with pytest.raises(WebhookVerificationError):
        google_calendar.verify(google(), [], NOW)


def graph(*states: str) -> WebhookRequest:
    items = [
        {"subscriptionId": f"sub-{i}", "clientState": s, "changeType": "updated", "resource": "x"}
        for i, s in enumerate(states)
    ]
    return WebhookRequest("POST", URL, {}, json.dumps({"value": items}).encode())


def test_graph_validation_token_is_echoed_as_text() -> None:
    request = WebhookRequest("POST", URL + "?validationToken=abc%20123", {}, b"")
    verified = microsoft_graph.verify(request, [], NOW)
    assert verified.events == [] and verified.response == {"text/plain": "abc 123"}


def test_graph_notifications_carry_the_client_state() -> None:
    events = microsoft_graph.verify(graph(SECRET, OLD), [SECRET, OLD], NOW).events
    assert [e.payload["subscription_id"] for e in events] == ["sub-0", "sub-1"]
    assert len({e.provider_event_id for e in events}) == 2
    assert "clientState" not in json.dumps([e.payload for e in events])


def test_graph_one_bad_client_state_refuses_the_batch() -> None:
    with pytest.raises(WebhookVerificationError):
        microsoft_graph.verify(graph(SECRET, "forged"), [SECRET], NOW)


@pytest.mark.parametrize("body", [b"{}", b'{"value": []}', b"not json", b'{"value": [1]}'])
def test_graph_refuses_what_is_not_a_notification(body: bytes) -> None:
    with pytest.raises(WebhookVerificationError):
        microsoft_graph.verify(WebhookRequest("POST", URL, {}, body), [SECRET], NOW)
