"""Signed links in patient messages: GET shows what the link will do and changes
nothing; POST confirms or cancels as the clinic's ``patient_link`` principal; twice
is friendly; the cancellation window asks for a call; altered, foreign or expired
tokens get a bare 404/410; the pages show no patient data."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import FakeClock
from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.messaging.models import Message, MessageEvent
from clinicbridge.messaging.service import queue_message
from clinicbridge.scheduling import links
from clinicbridge.scheduling.models import Booking, BookingChange
from clinicbridge.settings import Settings
from tests.conftest import Clinic, free_port
from tests.integration.test_messages import _email_integration
from tests.integration.test_scheduling_api import API, NOW, Setup, _ok, configure

FRIDAY_9 = "2026-03-06T09:00:00-05:00"
FRIDAY_9_UTC = datetime(2026, 3, 6, 14, 0, tzinfo=UTC)
WHEN = "Friday 6 March 2026 at 09:00 EST"
PHI = ("Alex", "Sample", "1980", "416 555 0123", "alex@example.com")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def client(settings: Settings, db: Database, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings, db=db, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def setup(client: TestClient, clinic: Clinic) -> Setup:
    return configure(client, clinic)


def _booking(client: TestClient, clinic: Clinic, setup: Setup) -> str:
    patient = {
        "first_name": "Alex",
        "last_name": "Sample",
        "date_of_birth": "1980-04-02",
        "phone": "(416) 555-0123",
        "email": "alex@example.com",
    }
    body = {
        "service_id": setup.service,
        "provider_id": setup.providers[0],
        "start": FRIDAY_9,
        "patient": patient,
    }
    created = _ok(client.post(f"{API}/bookings", json=body, headers=clinic.headers), 201)
    return str(created["id"])


@pytest.fixture
def booking(client: TestClient, clinic: Clinic, setup: Setup) -> str:
    return _booking(client, clinic, setup)


def _paths(settings: Settings, booking_id: str, expires_at: datetime = FRIDAY_9_UTC) -> Any:
    urls = links.booking_links(settings, booking_id, expires_at=expires_at)
    assert set(urls) == {"confirm_url", "cancel_url"}
    for url in urls.values():
        assert url.startswith(f"{settings.public_base_url}/b/")
    return urlsplit(urls["confirm_url"]).path, urlsplit(urls["cancel_url"]).path


def _state(db: Database, booking_id: str) -> tuple[str, list[tuple[str, str, str]]]:
    with db.read() as session:
        status = session.scalar(sa.select(Booking.status).where(Booking.id == booking_id))
        changes = session.execute(
            sa.select(BookingChange.action, BookingChange.actor_type, BookingChange.actor_id)
            .where(BookingChange.booking_id == booking_id)
            .order_by(BookingChange.at, BookingChange.id)
        ).all()
    assert status is not None
    return status, [tuple(c) for c in changes]  # type: ignore[misc]


def _html(response: Any, status: int = 200) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    text: str = response.text
    assert "<script" not in text.lower()
    for marker in PHI:
        assert marker not in text, marker
    return text


def _no_detail(response: Any, status: int) -> None:
    text = _html(response, status)
    assert "<form" not in text
    for word in ("signature", "expired token", "booking", "Traceback"):
        assert word not in text


def test_links_are_absolute_and_get_shows_the_question_without_changing_anything(
    client: TestClient, settings: Settings, db: Database, booking: str
) -> None:
    confirm, cancel = _paths(settings, booking)
    before = _state(db, booking)
    with db.read() as session:
        audits = session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    page = _html(client.get(confirm))
    assert f"Confirm your appointment on <strong>{WHEN}</strong>" in page
    assert "<strong>Consultation</strong>" in page
    assert "<strong>Maple Family Clinic</strong>" in page
    assert page.count("<form") == 1 and 'method="post"' in page
    page = _html(client.get(cancel))
    assert f"Cancel your appointment on <strong>{WHEN}</strong>" in page
    assert "Yes, cancel my appointment" in page
    client.get(confirm)
    client.get(cancel)
    assert _state(db, booking) == before == ("booked", [("created", "api_key", before[1][0][2])])
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == audits


def test_post_confirms_as_the_patient_link_and_twice_is_friendly(
    client: TestClient, settings: Settings, db: Database, booking: str
) -> None:
    confirm, cancel = _paths(settings, booking)
    page = _html(client.post(confirm, headers={"X-Request-Id": "req-link-1"}))
    assert "is confirmed" in page and WHEN in page and "<form" not in page
    status, changes = _state(db, booking)
    assert status == "confirmed"
    assert changes[-1] == ("confirmed", "system", "patient_link")
    with db.read() as session:
        audit = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "booking.confirm")
        ).one()
    assert (audit.actor_type, audit.actor_id, audit.request_id) == (
        "system",
        "patient_link",
        "req-link-1",
    )
    assert audit.ip
    again = _html(client.post(confirm))
    assert "is confirmed" in again
    assert _state(db, booking) == (status, changes)  # nothing more written
    shown = _html(client.get(confirm))
    assert "is confirmed" in shown and "<form" not in shown
    # A confirmed appointment can still be cancelled from the other link.
    assert "Yes, cancel my appointment" in _html(client.get(cancel))


def test_post_cancels_and_cancelling_again_is_friendly(
    client: TestClient, settings: Settings, db: Database, booking: str
) -> None:
    confirm, cancel = _paths(settings, booking)
    page = _html(client.post(cancel))
    assert "is cancelled" in page and WHEN in page
    status, changes = _state(db, booking)
    assert status == "cancelled"
    assert changes[-1] == ("cancelled", "system", "patient_link")
    with db.read() as session:
        reason = session.scalar(sa.select(Booking.cancel_reason).where(Booking.id == booking))
    assert reason == "cancelled by the patient from a message link"
    assert "already cancelled" in _html(client.post(cancel))
    assert "already cancelled" in _html(client.get(cancel))
    # Confirming a cancelled appointment is refused kindly, and changes nothing.
    assert "cannot be confirmed" in _html(client.get(confirm), 409)
    assert "cannot be confirmed" in _html(client.post(confirm), 409)
    assert _state(db, booking) == (status, changes)


def test_cancelling_inside_the_window_asks_the_patient_to_call(
    client: TestClient,
    clinic: Clinic,
    setup: Setup,
    settings: Settings,
    db: Database,
    clock: FakeClock,
    booking: str,
) -> None:
    h = clinic.headers
    body = {"cancellation_window_minutes": 1440}
    _ok(client.patch(f"{API}/services/{setup.service}", json=body, headers=h))
    _ok(client.patch(f"{API}/locations/{setup.location}", json={"phone": "+1 416-555-0100"},
                     headers=h))  # fmt: skip
    _, cancel = _paths(settings, booking)
    assert "Yes, cancel" in _html(client.get(cancel))  # two days ahead: outside the window
    clock.advance(datetime(2026, 3, 5, 15, 0, tzinfo=UTC) - NOW)  # 23 hours before
    for response in (client.get(cancel), client.post(cancel)):
        page = _html(response, 409)
        assert "Please call the clinic" in page and "too soon to cancel online" in page
        assert '<a href="tel:+14165550100">+1 416-555-0100</a>' in page
        assert "<form" not in page
    assert _state(db, booking)[0] == "booked"


def _unpadded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_altered_or_foreign_tokens_are_a_bare_404_and_change_nothing(
    client: TestClient, settings: Settings, db: Database, booking: str
) -> None:
    confirm, cancel = _paths(settings, booking)
    token = confirm.removeprefix("/b/")
    raw = _raw(token)
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    wrong_action = _unpadded(raw[:1] + b"x" + raw[2:])  # confirm -> cancel, old tag
    later = _unpadded(raw[:2] + struct.pack(">I", 2**32 - 1) + raw[6:])
    other_key = links.make_token(links.derive_key(b"k" * 32), booking, "cancel", FRIDAY_9_UTC)
    bad = [flipped, wrong_action, later, other_key, token[:-1], token + "A", "x", "A" * 300,
           token[:20] + "!" + token[21:], "%2e%2e"]  # fmt: skip
    before = _state(db, booking)
    for candidate in bad:
        for method in (client.get, client.post):
            _no_detail(method(f"/b/{candidate}"), 404)
    assert _state(db, booking) == before
    assert _html(client.get(cancel)).count("<form") == 1  # the genuine one still works


def test_another_clinics_booking_cannot_be_named_without_the_key(
    client: TestClient,
    clinic: Clinic,
    setup: Setup,
    settings: Settings,
    db: Database,
    make_clinic: Callable[..., Clinic],
    booking: str,
) -> None:
    other = make_clinic("Birch Street Clinic")
    theirs = _booking(client, other, configure(client, other))
    confirm, cancel = _paths(settings, booking)
    for path in (confirm, cancel):
        raw = _raw(path.removeprefix("/b/"))
        forged = _unpadded(raw[:6] + theirs.encode() + raw[-links.TAG_BYTES :])
        with pytest.raises(links.BadLinkTokenError):
            links.read_token(links.link_key(settings), forged, NOW)
        _no_detail(client.post(f"/b/{forged}"), 404)
        _no_detail(client.get(f"/b/{forged}"), 404)
    assert _state(db, theirs)[0] == "booked"
    # Their own links work, and show their clinic.
    _, their_cancel = _paths(settings, theirs)
    assert "Birch Street Clinic" in _html(client.get(their_cancel))


def test_an_expired_link_is_a_bare_410(
    client: TestClient, settings: Settings, db: Database, clock: FakeClock, booking: str
) -> None:
    confirm, cancel = _paths(settings, booking, expires_at=NOW + timedelta(hours=1))
    assert "<form" in _html(client.get(confirm))
    clock.advance(timedelta(hours=1))
    before = _state(db, booking)
    for path in (confirm, cancel):
        for method in (client.get, client.post):
            _no_detail(method(path), 410)
    assert _state(db, booking) == before


def test_a_booking_that_is_gone_is_a_404(
    client: TestClient, settings: Settings, db: Database
) -> None:
    confirm, _ = _paths(settings, "bkg_01J0000000000000000000000")
    _no_detail(client.get(confirm), 404)
    _no_detail(client.post(confirm), 404)


def test_posts_are_limited_per_client_ip(client: TestClient, clock: FakeClock) -> None:
    limit, window = _post_limit()
    for _ in range(limit):
        assert client.post("/b/x").status_code == 404
    refused = client.post("/b/x")
    _html(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert client.get("/b/x").status_code == 404  # GETs are not limited
    clock.advance(timedelta(seconds=window))
    assert client.post("/b/x").status_code == 404


def _post_limit() -> tuple[int, float]:
    from clinicbridge.api import booking_links

    return booking_links.POST_LIMIT


# --- the token itself -------------------------------------------------------------------


def test_tokens_round_trip_and_refuse_what_was_not_signed() -> None:
    key = links.derive_key(b"m" * 32)
    token = links.make_token(key, "bkg_ABC", "cancel", FRIDAY_9_UTC, version=1)
    assert "=" not in token and len(token) < 60
    assert links.read_token(key, token, NOW) == links.LinkRef("cancel", booking_id="bkg_ABC")
    by_message = links.make_token(key, "msg_ABC", "confirm", FRIDAY_9_UTC)  # version 2
    assert links.read_token(key, by_message, NOW) == links.LinkRef("confirm", message_id="msg_ABC")
    with pytest.raises(links.ExpiredLinkTokenError):
        links.read_token(key, token, FRIDAY_9_UTC)
    # A genuine signature over an unknown action or version is still refused.
    for header in (struct.pack(">BcI", 1, b"z", 2**31), struct.pack(">BcI", 3, b"c", 2**31)):
        payload = header + b"bkg_ABC"
        tag = hmac.new(key, payload, hashlib.sha256).digest()[: links.TAG_BYTES]
        with pytest.raises(links.BadLinkTokenError):
            links.read_token(key, _unpadded(payload + tag), NOW)
    with pytest.raises(ValueError):
        links.make_token(key, "bkg_ABC", "delete", FRIDAY_9_UTC)
    with pytest.raises(ValueError):
        links.make_token(key, "bkg_ABC", "confirm", datetime(2026, 3, 6, 9))  # naive
    with pytest.raises(ValueError):
        links.make_token(key, "bkg/../x", "confirm", FRIDAY_9_UTC)


def test_a_link_bound_to_its_message_acts_on_the_booking_and_is_a_click_on_the_message(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, booking: str
) -> None:
    _email_integration(client, clinic, free_port())  # queued, never sent here
    message_id = new_id("msg")
    with db.write() as session:
        queue_message(session, Ctx.system(clinic.id, "test", NOW), patient_id=_patient_of(
            db, booking), channel="email", subject="Your visit", body="See you",
            booking_id=booking, message_id=message_id)  # fmt: skip
    urls = links.booking_links(settings, booking, expires_at=FRIDAY_9_UTC, message_id=message_id)
    path = urlsplit(urls["confirm_url"]).path
    assert "Confirm" in _html(client.get(path))  # showing the page is no click
    with db.read() as session:
        assert (
            session.scalar(sa.select(Message.status).where(Message.id == message_id)) != "clicked"
        )
    _html(client.post(path))
    assert _state(db, booking)[0] == "confirmed"
    with db.read() as session:
        message = session.get(Message, message_id)
        events = session.scalars(
            sa.select(MessageEvent.detail).where(
                MessageEvent.message_id == message_id, MessageEvent.status == "clicked"
            )
        ).all()
    assert message is not None and message.status == "clicked"
    assert events == ["confirm link used"]
    # A message-bound link of a message that is gone (its patient erased) finds nothing.
    forged = links.booking_links(settings, booking, expires_at=FRIDAY_9_UTC,
                                 message_id=new_id("msg"))  # fmt: skip
    assert client.post(urlsplit(forged["cancel_url"]).path).status_code == 404
    assert _state(db, booking)[0] == "confirmed"


def _patient_of(db: Database, booking_id: str) -> str:
    with db.read() as session:
        found = session.scalar(sa.select(Booking.patient_id).where(Booking.id == booking_id))
        assert found is not None
        return found
