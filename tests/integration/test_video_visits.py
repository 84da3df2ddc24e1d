"""Video visits against the Daily and Zoom fakes: a meeting per booking of a video
service, moved on reschedule, deleted on cancel, links sealed and shown to staff, the
patient's link in message variables, and an outage that never blocks the booking."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.core.clock import SystemClock
from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext
from clinicbridge.messaging.booking_messages import message_variables
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling.models import Booking
from clinicbridge.settings import Settings
from clinicbridge.testing import daily as fake_daily
from clinicbridge.testing import zoom as fake_zoom
from clinicbridge.testing.hosts import HostRouter
from clinicbridge.vault.shared import shared_vault
from clinicbridge.video import meetings
from clinicbridge.video.models import VideoMeeting
from tests.conftest import Clinic
from tests.integration.calendar_helpers import API, Practice, ok, practice
from tests.integration.test_calendar_export import PATIENT, _slot
from tests.integration.test_calendar_scenario import run_jobs

DAILY_KEY = "daily-test-api-key-0000"
ZOOM = ("zoom-client-id", "zoom-client-secret", "zoom-account-1")


@pytest.fixture
def daily() -> Iterator[fake_daily.FakeDaily]:
    fake = fake_daily.FakeDaily(DAILY_KEY)
    meetings.configure(transport=HostRouter({fake_daily.HOST: fake}))
    yield fake
    meetings.configure()


@pytest.fixture
def zoom() -> Iterator[fake_zoom.FakeZoom]:
    fake = fake_zoom.FakeZoom(*ZOOM)
    meetings.configure(transport=HostRouter({fake_zoom.OAUTH_HOST: fake, fake_zoom.API_HOST: fake}))
    yield fake
    meetings.configure()


def _video_service(client: TestClient, clinic: Clinic, setup: Practice) -> str:
    body = {
        "name": "Video visit",
        "duration_minutes": 30,
        "modality": "video",
        "provider_ids": [setup.provider],
    }
    return str(ok(client.post(f"{API}/services", json=body, headers=clinic.headers), 201)["id"])


def _book(
    client: TestClient, clinic: Clinic, setup: Practice, service: str, start: str
) -> dict[str, Any]:
    body = {
        "service_id": service,
        "provider_id": setup.provider,
        "start": start,
        "patient": PATIENT,
    }
    return dict(ok(client.post(f"{API}/bookings", json=body, headers=clinic.headers), 201))


def _daily_and_mail(client: TestClient, clinic: Clinic) -> None:
    """The clinic's Daily integration and its e-mail (messages carry the video link)."""
    body = {"connector": "daily", "name": "Daily", "credentials": {"api_key": DAILY_KEY}}
    ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)
    mail = {
        "connector": "smtp",
        "name": "Front desk mail",
        "settings": {"host": "127.0.0.1", "port": 2525, "security": "none",
                     "from_email": "rdv@clinic.example"},
    }  # fmt: skip
    ok(client.post(f"{API}/integrations", json=mail, headers=clinic.headers), 201)


def _video(client: TestClient, clinic: Clinic, booking_id: str) -> dict[str, Any]:
    return dict(ok(client.get(f"{API}/bookings/{booking_id}/video", headers=clinic.headers)))


def test_daily_room_lifecycle(client: TestClient, clinic: Clinic, db: Database, settings: Settings,
                              daily: fake_daily.FakeDaily) -> None:  # fmt: skip
    setup = practice(client, clinic)
    service = _video_service(client, clinic, setup)
    body = {"connector": "daily", "name": "Daily", "credentials": {"api_key": DAILY_KEY}}
    ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)
    booking = _book(client, clinic, setup, service, _slot(client, clinic, setup))
    assert run_jobs(db, settings, meetings.KIND) == 1
    name = f"cb-{booking['id'].lower().replace('_', '-')}"
    room = daily.rooms[name]
    start = datetime.fromisoformat(booking["start"]).astimezone(UTC)
    assert room["privacy"] == "private" and room["config"]["nbf"] == int(start.timestamp()) - 900
    shown = _video(client, clinic, booking["id"])
    assert shown["status"] == "ready" and shown["connector"] == "daily"
    patient_token = shown["join_url"].split("?t=")[1]
    host_token = shown["host_url"].split("?t=")[1]
    assert (
        daily.tokens[patient_token]["is_owner"] is False
        and daily.tokens[host_token]["is_owner"] is True
    )
    with db.read() as session:
        row = session.scalars(sa.select(VideoMeeting)).one()
        assert patient_token not in str(row.links) and host_token not in str(row.links)  # sealed
        b = session.get(Booking, booking["id"])
        tenant, patient = session.get(Tenant, clinic.id), session.get(Patient, b.patient_id)  # type: ignore[union-attr]
        variables = message_variables(
            session, settings, b, tenant, patient, vault=shared_vault(db, settings.master_key_file)
        )  # type: ignore[arg-type]
    assert variables["booking"]["video_url"] == shown["join_url"]
    # the job again: nothing new
    assert (
        meetings.follow_booking(
            db, shared_vault(db, settings.master_key_file), booking["id"], datetime.now(UTC)
        )
        == "current"
    )
    later = _slot(client, clinic, setup, offset_hours=18)
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/reschedule",
            json={"start": later},
            headers=clinic.headers,
        )
    )
    run_jobs(db, settings, meetings.KIND)
    moved = datetime.fromisoformat(later).astimezone(UTC)
    assert daily.rooms[name]["config"]["nbf"] == int(moved.timestamp()) - 900
    assert _video(client, clinic, booking["id"])["join_url"] != shown["join_url"]  # new tokens
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/cancel", json={"reason": "x"}, headers=clinic.headers
        )
    )
    run_jobs(db, settings, meetings.KIND)
    assert name not in daily.rooms
    gone = _video(client, clinic, booking["id"])
    assert gone["status"] == "deleted" and gone["join_url"] is None


def test_an_outage_never_blocks_the_booking(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    daily: fake_daily.FakeDaily,
) -> None:
    setup = practice(client, clinic)
    service = _video_service(client, clinic, setup)
    body = {"connector": "daily", "name": "Daily", "credentials": {"api_key": DAILY_KEY}}
    ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)
    daily.failures.extend([503, 503, 503])
    booking = _book(client, clinic, setup, service, _slot(client, clinic, setup))
    assert booking["status"] == "booked"
    with pytest.raises(ExternalServiceError):
        run_jobs(db, settings, meetings.KIND)  # the job will retry with backoff
    assert (
        client.get(f"{API}/bookings/{booking['id']}/video", headers=clinic.headers).status_code
        == 404
    )
    vault = shared_vault(db, settings.master_key_file)
    assert meetings.follow_booking(db, vault, booking["id"], datetime.now(UTC)) == "created"
    assert _video(client, clinic, booking["id"])["status"] == "ready"
    # an in-person booking gets no meeting; another clinic sees nothing
    plain = _book(
        client, clinic, setup, setup.service, _slot(client, clinic, setup, offset_hours=19)
    )
    assert meetings.follow_booking(db, vault, plain["id"], datetime.now(UTC)) == "not_video"


def test_zoom_meeting_lifecycle(client: TestClient, clinic: Clinic, make_clinic, db: Database,  # type: ignore[no-untyped-def]
                                settings: Settings, zoom: fake_zoom.FakeZoom) -> None:  # fmt: skip
    setup = practice(client, clinic)
    service = _video_service(client, clinic, setup)
    creds = {"client_id": ZOOM[0], "client_secret": ZOOM[1]}
    body = {
        "connector": "zoom",
        "name": "Zoom",
        "credentials": creds,
        "settings": {"account_id": ZOOM[2]},
    }
    ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)
    booking = _book(client, clinic, setup, service, _slot(client, clinic, setup))
    run_jobs(db, settings, meetings.KIND)
    (meeting_id,) = zoom.meetings
    meeting = zoom.meetings[meeting_id]
    start = datetime.fromisoformat(booking["start"]).astimezone(UTC)
    assert (
        meeting["start_time"] == start.strftime("%Y-%m-%dT%H:%M:%SZ") and meeting["duration"] == 30
    )
    assert meeting["type"] == 2 and meeting["settings"]["waiting_room"] is True
    shown = _video(client, clinic, booking["id"])
    assert shown["join_url"] == meeting["join_url"] and shown["host_url"] == meeting["start_url"]
    later = _slot(client, clinic, setup, offset_hours=18)
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/reschedule",
            json={"start": later},
            headers=clinic.headers,
        )
    )
    run_jobs(db, settings, meetings.KIND)
    assert list(zoom.meetings) == [meeting_id]  # moved, not a second meeting
    assert zoom.meetings[meeting_id]["start_time"] == datetime.fromisoformat(later).astimezone(
        UTC
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    other = make_clinic("Birch Dental")
    assert (
        client.get(f"{API}/bookings/{booking['id']}/video", headers=other.headers).status_code
        == 404
    )
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/cancel", json={"reason": "x"}, headers=clinic.headers
        )
    )
    run_jobs(db, settings, meetings.KIND)
    assert zoom.meetings == {}


def test_a_refused_create_is_shown_as_failed(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    daily: fake_daily.FakeDaily,
) -> None:
    setup = practice(client, clinic)
    service = _video_service(client, clinic, setup)
    body = {"connector": "daily", "name": "Daily", "credentials": {"api_key": "wrong-key-0000"}}
    ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)
    booking = _book(client, clinic, setup, service, _slot(client, clinic, setup))
    run_jobs(db, settings, meetings.KIND)  # a 401 cannot get better by retrying
    shown = _video(client, clinic, booking["id"])
    assert (
        shown["status"] == "failed"
        and "HTTP 401" in shown["last_error"]
        and shown["join_url"] is None
    )


def test_google_meet_on_the_exported_event_without_daily_or_zoom(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings
) -> None:
    from clinicbridge.calendars import google, runtime
    from clinicbridge.calendars.export import EXPORT_KIND
    from clinicbridge.calendars.sync import SYNC_KIND
    from clinicbridge.testing import google_calendar as g
    from clinicbridge.testing.oauth_server import OAuthServer
    from tests.integration.calendar_helpers import (
        GOOGLE_CLIENT,
        authorize,
        connect,
        google_integration,
    )

    fake = g.FakeGoogleCalendar(OAuthServer(*GOOGLE_CLIENT))
    runtime.configure(transport=HostRouter({g.API_HOST: fake, g.TOKEN_HOST: fake}))
    try:
        setup = practice(client, clinic)
        service = _video_service(client, clinic, setup)
        integration = google_integration(client, clinic)
        authorize(client, clinic, setup.provider, integration, fake.oauth)
        fake.calendars["primary"] = {}
        connection = connect(client, clinic, setup.provider, integration, "primary")
        run_jobs(db, settings, SYNC_KIND)
        booking = _book(client, clinic, setup, service, _slot(client, clinic, setup))
        run_jobs(db, settings, EXPORT_KIND)
        assert run_jobs(db, settings, meetings.KIND) == 1  # no Daily or Zoom: nothing there
        event = fake.calendars["primary"][google.event_id_for(booking["id"], connection["id"])]
        link = event["conferenceData"]["entryPoints"][0]["uri"]
        shown = _video(client, clinic, booking["id"])
        assert (
            shown["connector"] == "google_meet" and shown["join_url"] == link == shown["host_url"]
        )
        later = _slot(client, clinic, setup, offset_hours=18)
        ok(
            client.post(
                f"{API}/bookings/{booking['id']}/reschedule",
                json={"start": later},
                headers=clinic.headers,
            )
        )
        run_jobs(db, settings, EXPORT_KIND)
        moved = fake.calendars["primary"][google.event_id_for(booking["id"], connection["id"])]
        assert moved["conferenceData"]["entryPoints"][0]["uri"] == link  # the update kept the Meet
        ok(
            client.post(
                f"{API}/bookings/{booking['id']}/cancel",
                json={"reason": "x"},
                headers=clinic.headers,
            )
        )
        run_jobs(db, settings, EXPORT_KIND)
        assert _video(client, clinic, booking["id"])["status"] == "deleted"
        vault = shared_vault(db, settings.master_key_file)
        assert meetings.follow_booking(db, vault, booking["id"], datetime.now(UTC)) == "elsewhere"
    finally:
        runtime.configure()


def test_a_link_made_after_the_confirmation_follows_it_once(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    daily: fake_daily.FakeDaily,
) -> None:
    from clinicbridge.messaging import booking_messages, video_links
    from clinicbridge.messaging.models import Message

    setup = practice(client, clinic)
    service = _video_service(client, clinic, setup)
    _daily_and_mail(client, clinic)
    daily.failures.extend([503, 503, 503])  # Daily is down when the visit is booked
    booked = ok(
        client.post(
            f"{API}/bookings",
            json={
                "service_id": service,
                "provider_id": setup.provider,
                "start": _slot(client, clinic, setup),
                "patient": {**PATIENT, "email": "helene@example.com"},
            },
            headers=clinic.headers,
        ),
        201,
    )
    with pytest.raises(ExternalServiceError):
        run_jobs(db, settings, meetings.KIND)
    run_jobs(db, settings, booking_messages.LISTENER_KIND)
    with db.read() as session:
        (confirmation,) = session.scalars(sa.select(Message)).all()
    assert confirmation.kind == "booking.confirmation"
    assert "Video visit link" not in confirmation.body
    assert run_jobs(db, settings, video_links.KIND) == 0  # no link yet: nothing to follow
    run_jobs(db, settings, meetings.KIND)  # Daily is back: the retry makes the room
    join_url = _video(client, clinic, booked["id"])["join_url"]
    assert run_jobs(db, settings, video_links.KIND) == 1
    with db.read() as session:
        (job,) = session.scalars(sa.select(Job).where(Job.kind == video_links.KIND)).all()
    context = JobContext(
        job.id, job.kind, job.tenant_id, dict(job.payload), 2, 5, db, SystemClock().now, settings
    )
    assert video_links.follow_up(context) == []  # the job run again: no second message
    with db.read() as session:
        sent = session.scalars(sa.select(Message).order_by(Message.created_at, Message.id)).all()
    follow = [m for m in sent if m.kind == "booking.video_link"]
    assert len(follow) == 1 and follow[0].channel == "email"
    assert join_url in follow[0].body and join_url in (follow[0].html or "")
    assert follow[0].subject is not None and "video link" in follow[0].subject


def test_no_follow_up_when_the_confirmation_carried_the_link(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    daily: fake_daily.FakeDaily,
) -> None:
    from clinicbridge.messaging import booking_messages, video_links
    from clinicbridge.messaging.models import Message

    setup = practice(client, clinic)
    service = _video_service(client, clinic, setup)
    _daily_and_mail(client, clinic)
    ok(
        client.post(
            f"{API}/bookings",
            json={
                "service_id": service,
                "provider_id": setup.provider,
                "start": _slot(client, clinic, setup),
                "patient": {**PATIENT, "email": "helene@example.com"},
            },
            headers=clinic.headers,
        ),
        201,
    )
    run_jobs(db, settings, meetings.KIND)  # the meeting first (the link job finds no message)
    run_jobs(db, settings, video_links.KIND)
    run_jobs(db, settings, booking_messages.LISTENER_KIND)  # then the confirmation, with it
    with db.read() as session:
        kinds = session.scalars(sa.select(Message.kind)).all()
    assert kinds == ["booking.confirmation"]


def test_a_reschedule_with_new_daily_tokens_sends_the_new_link(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    daily: fake_daily.FakeDaily,
) -> None:
    from clinicbridge.messaging import booking_messages, video_links
    from clinicbridge.messaging.models import Message

    setup = practice(client, clinic)
    service = _video_service(client, clinic, setup)
    _daily_and_mail(client, clinic)
    booked = ok(
        client.post(
            f"{API}/bookings",
            json={
                "service_id": service,
                "provider_id": setup.provider,
                "start": _slot(client, clinic, setup),
                "patient": {**PATIENT, "email": "helene@example.com"},
            },
            headers=clinic.headers,
        ),
        201,
    )
    run_jobs(db, settings, meetings.KIND)
    first = _video(client, clinic, booked["id"])["join_url"]
    run_jobs(db, settings, video_links.KIND)  # no message yet: nothing
    run_jobs(db, settings, booking_messages.LISTENER_KIND)  # the confirmation, with the link
    later = _slot(client, clinic, setup, offset_hours=18)
    ok(client.post(f"{API}/bookings/{booked['id']}/reschedule", json={"start": later},
                   headers=clinic.headers))  # fmt: skip
    run_jobs(db, settings, booking_messages.LISTENER_KIND)  # built before the new tokens
    run_jobs(db, settings, meetings.KIND)
    second = _video(client, clinic, booked["id"])["join_url"]
    assert second != first
    run_jobs(db, settings, video_links.KIND)
    with db.read() as session:
        sent = session.scalars(sa.select(Message).order_by(Message.created_at, Message.id)).all()
    assert [m.kind for m in sent] == [
        "booking.confirmation",
        "booking.rescheduled",
        "booking.video_link",
    ]
    assert first in sent[1].body and second in sent[2].body and first not in sent[2].body


def test_a_link_stored_while_the_confirmation_is_built_reaches_the_patient_once(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    daily: fake_daily.FakeDaily,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The confirmation reads no link, the meeting is stored before it commits, and the
    follow-up job runs at once: the patient still gets the link, in one message."""
    import threading

    from clinicbridge.messaging import booking_messages, video_links
    from clinicbridge.messaging.models import Message

    setup = practice(client, clinic)
    service = _video_service(client, clinic, setup)
    _daily_and_mail(client, clinic)
    patient = {**PATIENT, "email": "helene@example.com"}
    body = {"service_id": service, "provider_id": setup.provider, "patient": patient}
    body["start"] = _slot(client, clinic, setup)
    ok(client.post(f"{API}/bookings", json=body, headers=clinic.headers), 201)

    built, release = threading.Event(), threading.Event()
    original = booking_messages.queue_message

    def paused(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        built.set()  # the confirmation is written, its transaction still open
        assert release.wait(10)
        return made

    monkeypatch.setattr(booking_messages, "queue_message", paused)
    failures: list[BaseException] = []

    def run(kind: str) -> None:
        try:
            run_jobs(db, settings, kind)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    confirming = threading.Thread(target=run, args=(booking_messages.LISTENER_KIND,))
    confirming.start()
    assert built.wait(10)
    storing = threading.Thread(target=run, args=(meetings.KIND,))
    storing.start()
    storing.join(1.0)  # PostgreSQL: waits for the confirmation; SQLite: for the writer
    run_jobs(db, settings, video_links.KIND)  # a follow-up queued by then runs now
    release.set()
    confirming.join(10)
    storing.join(10)
    assert not failures and not confirming.is_alive() and not storing.is_alive()
    run_jobs(db, settings, video_links.KIND)
    with db.read() as session:
        sent = session.scalars(sa.select(Message).order_by(Message.created_at, Message.id)).all()
        (meeting,) = session.scalars(sa.select(VideoMeeting)).all()
    assert meeting.status == "ready"
    with db.read() as session:
        join_url = meetings.links(
            session, shared_vault(db, settings.master_key_file), meeting.booking_id
        )
    assert join_url is not None
    carrying = [m.kind for m in sent if join_url["join_url"] in m.body]
    assert carrying == ["booking.video_link"] or carrying == ["booking.confirmation"]
