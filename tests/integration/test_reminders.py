"""Reminders: jobs made with the booking (and rolled back with it), replaced on
reschedule, cancelled with the booking, quiet hours in the clinic's zone across a DST
change, opt-out between planning and sending, channel fallback, and the batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import SystemClock
from clinicbridge.core.context import Ctx
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext
from clinicbridge.messaging import reminder_sending, reminders, sending
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.reminder_models import BookingReminder
from clinicbridge.messaging.status import apply_provider_status
from clinicbridge.scheduling import bookings
from clinicbridge.settings import Settings
from clinicbridge.webhooks.inbox import PROCESS_KIND
from tests.conftest import Clinic, add_key, free_port
from tests.integration.test_messages import _email_integration, run_jobs
from tests.integration.test_smtp import Server, Sink
from tests.integration.test_twilio_messaging import FakeTwilio, _status, _twilio, fake

__all__ = ["fake"]  # the fixture, imported for its name

API = "/api/v1"
TORONTO = ZoneInfo("America/Toronto")


@pytest.fixture
def smtp() -> Iterator[Server]:
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="mail.test")
    controller.start()
    yield Server(port, sink)
    controller.stop()


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _setup(client: TestClient, clinic: Clinic) -> tuple[str, str, str]:
    """(provider, service, patient): a provider working around the clock in Toronto."""
    h = clinic.headers
    loc = _ok(
        client.post(
            f"{API}/locations", json={"name": "Main St", "timezone": "America/Toronto"}, headers=h
        ),
        201,
    )["id"]
    prv = _ok(
        client.post(
            f"{API}/providers",
            json={"display_name": "Dr. Ada Test", "timezone": "America/Toronto"},
            headers=h,
        ),
        201,
    )["id"]
    hours = [{"weekday": d, "start": "00:00", "end": "24:00", "location_id": loc} for d in range(7)]
    _ok(client.put(f"{API}/providers/{prv}/hours", json={"intervals": hours}, headers=h))
    svc = _ok(
        client.post(
            f"{API}/services",
            json={
                "name": "Check-up",
                "duration_minutes": 30,
                "slot_interval_minutes": 30,
                "max_advance_days": 730,
                "provider_ids": [prv],
            },
            headers=h,
        ),
        201,
    )["id"]
    patient = {
        "first_name": "Quinn",
        "last_name": "Sample",
        "date_of_birth": "1984-02-03",
        "email": "quinn@example.com",
        "phone": "+14165550123",
    }
    pat = _ok(client.post(f"{API}/patients?force=true", json=patient, headers=h), 201)["id"]
    return prv, svc, pat


def _ctx(clinic: Clinic, now: datetime) -> Ctx:
    return Ctx(clinic.id, "system", "test", "owner", frozenset(), now)


def _book(
    db: Database, clinic: Clinic, ids: tuple[str, str, str], start: datetime, now: datetime
) -> str:
    prv, svc, pat = ids
    with db.write() as session:
        booking = bookings.create_booking(
            session,
            _ctx(clinic, now),
            service_id=svc,
            provider_id=prv,
            start=start,
            patient_id=pat,
        )
        return booking.id


def _jobs(db: Database, booking_id: str | None = None) -> list[Job]:
    with db.read() as session:
        rows = session.scalars(
            sa.select(Job).where(Job.kind == reminders.REMINDER_KIND).order_by(Job.run_at)
        ).all()
    return [j for j in rows if booking_id is None or j.payload["booking_id"] == booking_id]


def _rows(db: Database, booking_id: str) -> dict[int, BookingReminder]:
    with db.read() as session:
        found = session.scalars(
            sa.select(BookingReminder).where(BookingReminder.booking_id == booking_id)
        ).all()
    return {r.offset_minutes: r for r in found}


def _future(days: int, hour: int = 15) -> datetime:
    """``days`` from now at ``hour``:00 Toronto time (outside quiet hours)."""
    local = datetime.now(TORONTO) + timedelta(days=days)
    return local.replace(hour=hour, minute=0, second=0, microsecond=0).astimezone(UTC)


def test_a_booking_gets_its_24_h_and_2_h_reminders_in_its_own_transaction(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    ids = _setup(client, clinic)
    start = _future(3)
    booking = _book(db, clinic, ids, start, datetime.now(UTC))
    jobs = _jobs(db, booking)
    assert [j.run_at for j in jobs] == [start - timedelta(hours=24), start - timedelta(hours=2)]
    assert {j.state for j in jobs} == {"pending"}
    assert {o: r.status for o, r in _rows(db, booking).items()} == {
        1440: "scheduled",
        120: "scheduled",
    }
    with pytest.raises(RuntimeError), db.write() as session:  # the booking rolls back
        bookings.create_booking(
            session,
            _ctx(clinic, datetime.now(UTC)),
            service_id=ids[1],
            provider_id=ids[0],
            start=_future(4),
            patient_id=ids[2],
        )
        raise RuntimeError("rolled back")
    assert len(_jobs(db)) == 2


def test_a_reschedule_replaces_the_reminders_and_a_cancel_cancels_them(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, smtp: Server
) -> None:
    _email_integration(client, clinic, smtp.port)
    ids = _setup(client, clinic)
    booking = _book(db, clinic, ids, _future(3), datetime.now(UTC))
    old = _jobs(db, booking)
    moved = _future(5, hour=10)
    with db.write() as session:
        bookings.reschedule_booking(session, _ctx(clinic, datetime.now(UTC)), booking, start=moved)
    jobs = _jobs(db, booking)
    assert {j.id: j.state for j in jobs if j.id in {o.id for o in old}} == {
        old[0].id: "cancelled",
        old[1].id: "cancelled",
    }
    pending = [j for j in jobs if j.state == "pending"]
    assert [j.run_at for j in pending] == [moved - timedelta(hours=24), moved - timedelta(hours=2)]
    assert {r.starts_at for r in _rows(db, booking).values()} == {moved}
    with db.write() as session:
        bookings.cancel_booking(
            session, _ctx(clinic, datetime.now(UTC)), booking, reason="patient called"
        )
    assert {j.state for j in _jobs(db, booking)} == {"cancelled"}
    assert {r.status for r in _rows(db, booking).values()} == {"cancelled"}
    for job in _jobs(db, booking):  # the jobs run anyway (a worker had claimed them)
        reminder_sending.send_reminder(
            JobContext(
                job.id,
                job.kind,
                job.tenant_id,
                dict(job.payload),
                1,
                5,
                db,
                SystemClock().now,
                settings,
            )
        )
    run_jobs(db, settings, sending.SEND_KIND)
    with db.read() as session:
        assert session.scalars(sa.select(Message.kind)).all() == []
    assert smtp.sink.envelopes == []


def test_quiet_hours_move_or_skip_reminders_on_the_clinics_clock_across_dst(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    ids = _setup(client, clinic)
    now = datetime(2027, 3, 10, 12, tzinfo=UTC)  # the week clocks spring forward (Mar 14)
    # Sunday 09:00 EDT: 2 h before is 07:00 (quiet) -> 08:00 EDT, 12:00Z; 24 h before is
    # Saturday 07:00 EST (13:00Z - 24 h = 12:00Z, quiet) -> 08:00 EST, which is 13:00Z.
    nine = datetime(2027, 3, 14, 9, tzinfo=TORONTO)
    booking = _book(db, clinic, ids, nine, now)
    rows = _rows(db, booking)
    assert rows[120].due_at == datetime(2027, 3, 14, 12, tzinfo=UTC)
    assert rows[1440].due_at == datetime(2027, 3, 13, 13, tzinfo=UTC)
    assert [j.run_at for j in _jobs(db, booking)] == [rows[1440].due_at, rows[120].due_at]
    # Sunday 08:30 EDT: 2 h before moves to 08:00, later than 07:30 (start - 60 min): skipped.
    early = _book(db, clinic, ids, datetime(2027, 3, 14, 8, 30, tzinfo=TORONTO), now)
    rows = _rows(db, early)
    assert rows[120].status == "skipped" and rows[120].reason == reminders.TOO_LATE
    assert rows[1440].status == "scheduled"
    assert len(_jobs(db, early)) == 1
    # Fall back (Nov 7, 2027): Saturday 22:00 EDT moves to Sunday 08:00 EST.
    due = datetime(2027, 11, 6, 22, tzinfo=TORONTO)
    moved = reminders.after_quiet_hours(due, TORONTO, 21 * 60, 8 * 60)
    assert moved == datetime(2027, 11, 7, 13, tzinfo=UTC)
    outside = datetime(2027, 11, 7, 12, tzinfo=TORONTO)
    assert reminders.after_quiet_hours(outside, TORONTO, 21 * 60, 8 * 60) == outside


def test_without_sms_the_reminder_falls_back_to_e_mail_once(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, smtp: Server
) -> None:
    _email_integration(client, clinic, smtp.port)
    ids = _setup(client, clinic)
    booking = _book(db, clinic, ids, _future(3), datetime.now(UTC))
    assert run_jobs(db, settings, reminders.REMINDER_KIND) == 2
    assert run_jobs(db, settings, reminders.REMINDER_KIND) == 2  # run twice: still one each
    run_jobs(db, settings, sending.SEND_KIND)
    rows = _rows(db, booking)
    assert {r.status for r in rows.values()} == {"sent"}
    assert {r.channel for r in rows.values()} == {"email"}
    assert rows[120].reason == "sms: no integration"
    assert len(smtp.sink.envelopes) == 2
    assert b"Reminder" in (smtp.sink.envelopes[0].original_content or b"")


def test_an_opt_out_after_planning_stops_the_reminder(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, smtp: Server
) -> None:
    _email_integration(client, clinic, smtp.port)
    ids = _setup(client, clinic)
    booking = _book(db, clinic, ids, _future(3), datetime.now(UTC))
    opt_out = {"consents": [{"channel": "email", "granted": False, "source": "patient e-mail"}]}
    _ok(client.put(f"{API}/patients/{ids[2]}/consents", json=opt_out, headers=clinic.headers))
    run_jobs(db, settings, reminders.REMINDER_KIND)
    run_jobs(db, settings, sending.SEND_KIND)
    rows = _rows(db, booking)
    assert {r.status for r in rows.values()} == {"skipped"}
    assert rows[1440].reason == "no channel: sms: no integration; email: opted out"
    assert smtp.sink.envelopes == []
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_schedule_upcoming_plans_each_reminder_once(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    ids = _setup(client, clinic)
    now = datetime.now(UTC)
    made = [_book(db, clinic, ids, _future(3 + i), now) for i in range(5)]
    with db.write() as session:  # bookings from before reminders existed
        session.execute(sa.delete(BookingReminder))
        session.execute(sa.delete(Job).where(Job.kind == reminders.REMINDER_KIND))
        bookings.cancel_booking(session, _ctx(clinic, now), made[4], reason="moved away")
    assert reminders.schedule_upcoming(db, now=now, batch=2) == 8
    assert reminders.schedule_upcoming(db, now=now, batch=2) == 0
    assert reminders.schedule_upcoming(db, now=now, tenant_id=clinic.id) == 0
    jobs = _jobs(db)
    assert len(jobs) == 8 and {j.payload["booking_id"] for j in jobs} == set(made[:4])
    assert _rows(db, made[4]) == {}


# --- channel fall-back on a provider's failure ---------------------------------------------


def test_an_sms_reminder_twilio_reports_undelivered_goes_again_by_e_mail_once(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    smtp: Server,
    fake: FakeTwilio,
) -> None:
    sms, booking, sid = _reminded_by_sms(client, clinic, db, settings, smtp, fake)
    _status(client, settings, sms, sid, "undelivered", ErrorCode="30003")
    _status(client, settings, sms, sid, "undelivered", ErrorCode="30003")  # a retried callback
    run_jobs(db, settings, PROCESS_KIND)
    assert run_jobs(db, settings, reminder_sending.FALLBACK_KIND) == 1  # one job for two callbacks
    run_jobs(db, settings, reminder_sending.FALLBACK_KIND)  # the job run again changes nothing
    run_jobs(db, settings, sending.SEND_KIND)
    rows = _rows(db, booking)
    assert (rows[1440].status, rows[1440].channel) == ("sent", "email")
    assert rows[1440].reason == "sms: undelivered"
    assert rows[120].channel == "sms"  # the other reminder was delivered by SMS
    assert len(smtp.sink.envelopes) == 1
    # The e-mail bounces too: nothing is left to try, and the reminder says why.
    email = _message_of(db, rows[1440].message_id)
    with db.write() as session:
        apply_provider_status(session, provider="smtp", provider_message_id="x", status="failed",
                              at=datetime.now(UTC))  # not ours: nothing happens  # fmt: skip
        message = session.get(Message, email.id)
        assert message is not None
        message.provider_message_id = "smtp-1"
    with db.write() as session:
        apply_provider_status(session, provider="smtp", provider_message_id="smtp-1",
                              status="bounced", at=datetime.now(UTC))  # fmt: skip
    run_jobs(db, settings, reminder_sending.FALLBACK_KIND)
    row = _rows(db, booking)[1440]
    assert row.status == "failed"
    assert row.reason == "sms: undelivered; email: bounced; no channel left"


def test_no_fall_back_once_the_booking_is_cancelled(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    smtp: Server,
    fake: FakeTwilio,
) -> None:
    sms, booking, sid = _reminded_by_sms(client, clinic, db, settings, smtp, fake)
    with db.write() as session:
        bookings.cancel_booking(session, _ctx(clinic, datetime.now(UTC)), booking, reason="ill")
    _status(client, settings, sms, sid, "failed", ErrorCode="30006")
    run_jobs(db, settings, PROCESS_KIND)
    run_jobs(db, settings, reminder_sending.FALLBACK_KIND)
    run_jobs(db, settings, sending.SEND_KIND)
    assert smtp.sink.envelopes == []
    row = _rows(db, booking)[1440]
    assert (
        row.status == "failed" and row.reason == "sms: failed; not sent again: booking is cancelled"
    )


def _reminded_by_sms(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    smtp: Server,
    fake: FakeTwilio,
) -> tuple[str, str, str]:
    """A clinic with SMS and e-mail, a booking whose two reminders went by SMS:
    (the Twilio integration, the booking, the 24 h reminder's Twilio SID)."""
    sms = _twilio(client, clinic)
    _email_integration(client, clinic, smtp.port)
    ids = _setup(client, clinic)
    booking = _book(db, clinic, ids, _future(3), datetime.now(UTC))
    run_jobs(db, settings, reminders.REMINDER_KIND)
    run_jobs(db, settings, sending.SEND_KIND)
    rows = _rows(db, booking)
    assert {r.channel for r in rows.values()} == {"sms"} and len(fake.messages) == 2
    sid = _message_of(db, rows[1440].message_id).provider_message_id
    assert sid is not None
    return sms, booking, sid


def _message_of(db: Database, message_id: str | None) -> Message:
    assert message_id is not None
    with db.read() as session:
        found = session.get(Message, message_id)
        assert found is not None
        return found


# --- the rules API ---------------------------------------------------------------------------


def test_reminder_rules_through_the_api_change_what_is_planned(
    client: TestClient, clinic: Clinic, db: Database, make_clinic: Any
) -> None:
    ids = _setup(client, clinic)
    h = clinic.headers
    built_in = _ok(client.get(f"{API}/reminder-rules", headers=h))["data"]
    assert [(r["source"], r["offsets"], r["quiet_start"]) for r in built_in] == [
        ("built_in", [1440, 120], "21:00")
    ]
    rule = {"offsets": [2880], "channels": ["email"], "quiet_start": "22:30",
            "quiet_end": "07:15", "min_lead_minutes": 30}  # fmt: skip
    saved = _ok(client.put(f"{API}/reminder-rules/services/{ids[1]}", json=rule, headers=h))
    assert (saved["scope"], saved["service_id"], saved["quiet_end"]) == ("service", ids[1], "07:15")
    default = {**rule, "offsets": [60], "enabled": False}
    _ok(client.put(f"{API}/reminder-rules/default", json=default, headers=h))
    listed = _ok(client.get(f"{API}/reminder-rules", headers=h))["data"]
    assert [(r["scope"], r["offsets"], r["enabled"]) for r in listed] == [
        ("clinic", [60], False),
        ("service", [2880], True),
    ]
    start = _future(4)
    booking = _book(db, clinic, ids, start, datetime.now(UTC))
    assert [j.run_at for j in _jobs(db, booking)] == [start - timedelta(hours=48)]
    assert client.delete(f"{API}/reminder-rules/services/{ids[1]}", headers=h).status_code == 204
    assert client.delete(f"{API}/reminder-rules/services/{ids[1]}", headers=h).status_code == 404
    with db.read() as session:
        actions = session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.resource_type == "reminder_rule")
        ).all()
    assert sorted(actions) == [
        "reminder_rule.delete",
        "reminder_rule.update",
        "reminder_rule.update",
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"offsets": []}, "offsets"),
        ({"offsets": [120, 120]}, "offsets"),
        ({"offsets": [0]}, "offsets"),
        ({"channels": ["fax"]}, "channels.0"),
        ({"channels": ["sms", "sms"]}, "channels"),
        ({"quiet_start": "25:00"}, "quiet_start"),
        ({"min_lead_minutes": -1}, "min_lead_minutes"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_rule_names_its_field_and_saves_nothing(
    client: TestClient, clinic: Clinic, change: dict[str, Any], field: str
) -> None:
    rule = {"offsets": [1440], "channels": ["sms"], **change}
    answer = client.put(f"{API}/reminder-rules/default", json=rule, headers=clinic.headers)
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    listed = _ok(client.get(f"{API}/reminder-rules", headers=clinic.headers))["data"]
    assert [r["source"] for r in listed] == ["built_in"]


def test_another_clinics_service_has_no_rule_here(
    client: TestClient, clinic: Clinic, db: Database, make_clinic: Any
) -> None:
    ids = _setup(client, clinic)
    other = make_clinic("Other Clinic")
    rule = {"offsets": [1440], "channels": ["sms"]}
    answer = client.put(f"{API}/reminder-rules/services/{ids[1]}", json=rule, headers=other.headers)
    assert answer.status_code == 404
    front_desk = add_key(db, clinic, "front_desk")
    refused = client.put(f"{API}/reminder-rules/default", json=rule, headers=front_desk.headers)
    assert refused.status_code == 403
