"""The Vapi tool endpoint end to end: recorded-shape ``tool-calls`` messages per tool,
authentication by the integration's own secret, tenant isolation, caller verification,
the tool-call log and its metrics. All data is made up."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import FakeClock
from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.core.rbac import BUILTIN_ROLES
from clinicbridge.db.engine import Database
from clinicbridge.patients import service as patients
from clinicbridge.patients.models import PatientNote
from clinicbridge.scheduling.models import (
    Location,
    Provider,
    Service,
    ServiceProvider,
    WorkingHours,
)
from clinicbridge.settings import Settings
from clinicbridge.voice.models import VoiceCall, VoiceToolCall
from tests.conftest import Clinic

# Monday 2 March 2026, 09:00 in Toronto (EST, UTC-5).
NOW = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
SECRET = "vapi-secret-maple-0123456789"
OTHER_SECRET = "vapi-secret-birch-9876543210"
CALLER = "+15145550199"


@dataclass
class Practice:
    clinic: Clinic
    integration_id: str
    checkup_id: str
    video_id: str
    ada_id: str
    grace_id: str
    patient_id: str


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def vclient(settings: Settings, db: Database, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings, db=db, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _ctx(tenant_id: str) -> Ctx:
    return Ctx(tenant_id, "system", "test", "owner", BUILTIN_ROLES["owner"], NOW)


def seed_practice(db: Database, tenant_id: str) -> dict[str, str]:
    """A location, two providers working Mon-Fri 09:00-17:00, two services."""
    ids = {k: new_id(p) for k, p in (("loc", "loc"), ("ada", "prv"), ("grace", "prv"))}
    ids |= {"checkup": new_id("svc"), "video": new_id("svc")}
    with db.write() as session:
        session.add(
            Location(
                id=ids["loc"],
                tenant_id=tenant_id,
                name="Main",
                timezone="America/Toronto",
                is_active=True,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        for key, name in (("ada", "Dr. Ada Lovelace"), ("grace", "Dr. Grace Hopper")):
            session.add(
                Provider(
                    id=ids[key],
                    tenant_id=tenant_id,
                    display_name=name,
                    timezone="America/Toronto",
                    is_active=True,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        session.flush()
        for key in ("ada", "grace"):
            for weekday in range(5):
                session.add(
                    WorkingHours(
                        id=new_id("wkh"),
                        tenant_id=tenant_id,
                        provider_id=ids[key],
                        location_id=ids["loc"],
                        weekday=weekday,
                        start_minute=9 * 60,
                        end_minute=17 * 60,
                    )
                )
        for key, name, minutes, modality in (
            ("checkup", "General check-up", 30, "in_person"),
            ("video", "Video consultation", 20, "video"),
        ):
            session.add(
                Service(
                    id=ids[key],
                    tenant_id=tenant_id,
                    name=name,
                    duration_minutes=minutes,
                    buffer_before_minutes=0,
                    buffer_after_minutes=0,
                    slot_interval_minutes=30,
                    min_notice_minutes=60,
                    max_advance_days=90,
                    cancellation_window_minutes=0,
                    capacity=1,
                    modality=modality,
                    is_public=True,
                    is_active=True,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        session.flush()
        for service in ("checkup", "video"):
            for provider in ("ada", "grace"):
                session.add(
                    ServiceProvider(
                        service_id=ids[service], provider_id=ids[provider], tenant_id=tenant_id
                    )
                )
    return ids


def seed_patient(db: Database, tenant_id: str, phone: str | None = CALLER) -> str:
    with db.write() as session:
        patient, _ = patients.find_or_create_patient(
            session,
            _ctx(tenant_id),
            first_name="Hélène",
            last_name="Tremblay",
            date_of_birth=date(1980, 3, 5),
            phone=phone,
            source="test",
        )
        return patient.id


def create_integration(client: TestClient, clinic: Clinic, secret: str) -> str:
    response = client.post(
        "/api/v1/integrations",
        headers=clinic.headers,
        json={"connector": "vapi", "name": "Front desk", "credentials": {"webhook_secret": secret}},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def practice(vclient: TestClient, db: Database, clinic: Clinic) -> Practice:
    ids = seed_practice(db, clinic.id)
    return Practice(
        clinic,
        create_integration(vclient, clinic, SECRET),
        ids["checkup"],
        ids["video"],
        ids["ada"],
        ids["grace"],
        seed_patient(db, clinic.id),
    )


def message(
    calls: list[tuple[str, dict[str, Any] | str]],
    *,
    call_id: str = "call-7f3a",
    number: str | None = "+1 (438) 555-0142",
) -> dict[str, Any]:
    """A ``tool-calls`` server message as Vapi sends it (trimmed of unused fields)."""
    customer = {"number": number} if number else {}
    return {
        "message": {
            "timestamp": 1772460000000,
            "type": "tool-calls",
            "toolCallList": [
                {
                    "id": f"toolu_{i:02d}",
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }
                for i, (name, args) in enumerate(calls)
            ],
            "call": {
                "id": call_id,
                "orgId": "org-123",
                "type": "inboundPhoneCall",
                "status": "in-progress",
                "assistantId": "asst-42",
                "customer": customer,
            },
            "customer": customer,
            "phoneNumber": {"id": "pn-1", "number": "+15145550100"},
            "assistant": {"id": "asst-42", "name": "Front desk"},
        }
    }


Call = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def call(vclient: TestClient, practice: Practice) -> Call:
    """Send tool calls to the practice's endpoint; the decoded results, in order."""

    def send(*calls: tuple[str, dict[str, Any] | str], **kw: Any) -> list[dict[str, Any]]:
        response = vclient.post(
            f"/voice/vapi/{practice.integration_id}",
            json=message(list(calls), **kw),
            headers={"X-Vapi-Secret": SECRET},
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["toolCallId"] for r in results] == [f"toolu_{i:02d}" for i in range(len(calls))]
        for r in results:
            assert isinstance(r["result"], str) and "\n" not in r["result"]
        return [json.loads(r["result"]) for r in results]

    return send


IDENTITY = {"first_name": "Helene", "last_name": "Tremblay", "date_of_birth": "March 5th 1980"}


# --- authentication and tenancy -------------------------------------------------------------


def test_wrong_or_missing_secret_is_401_and_runs_nothing(
    vclient: TestClient, practice: Practice, db: Database
) -> None:
    url = f"/voice/vapi/{practice.integration_id}"
    body = message([("checkAvailability", {})])
    for headers in ({"X-Vapi-Secret": "nope"}, {"Authorization": "Bearer nope"}, {}):
        response = vclient.post(url, json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "nope" not in response.text
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(VoiceToolCall)) == 0
        failures = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "voice.authentication_failed")
        ).all()
        assert len(failures) == 3


def test_bearer_secret_is_accepted(vclient: TestClient, practice: Practice) -> None:
    response = vclient.post(
        f"/voice/vapi/{practice.integration_id}",
        json=message([("checkAvailability", {"service": "check-up"})]),
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    assert response.status_code == 200
    assert json.loads(response.json()["results"][0]["result"])["success"] is True


def test_another_clinics_integration_is_404(
    vclient: TestClient, practice: Practice, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    birch = make_clinic("Birch Dental")
    seed_practice(db, birch.id)
    birch_integration = create_integration(vclient, birch, OTHER_SECRET)
    body = message([("checkAvailability", {})])
    # Maple's secret at Birch's URL: Birch's integration is another clinic's resource.
    response = vclient.post(
        f"/voice/vapi/{birch_integration}", json=body, headers={"X-Vapi-Secret": SECRET}
    )
    assert response.status_code == 404
    # And the other way round.
    response = vclient.post(
        f"/voice/vapi/{practice.integration_id}",
        json=body,
        headers={"Authorization": f"Bearer {OTHER_SECRET}"},
    )
    assert response.status_code == 404
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(VoiceToolCall)) == 0


def test_unknown_disabled_and_non_vapi_integrations_are_404(
    vclient: TestClient, practice: Practice
) -> None:
    body = message([("checkAvailability", {})])
    headers = {"X-Vapi-Secret": SECRET}
    assert vclient.post("/voice/vapi/int_nope", json=body, headers=headers).status_code == 404
    stripe = vclient.post(
        "/api/v1/integrations",
        headers=practice.clinic.headers,
        json={
            "connector": "stripe",
            "name": "Payments",
            "credentials": {"secret_key": "sk_test_made_up_000", "webhook_secret": SECRET},
        },
    )
    if stripe.status_code == 201:
        url = f"/voice/vapi/{stripe.json()['id']}"
        assert vclient.post(url, json=body, headers=headers).status_code == 404
    disabled = vclient.patch(
        f"/api/v1/integrations/{practice.integration_id}",
        headers=practice.clinic.headers,
        json={"enabled": False},
    )
    assert disabled.status_code == 200
    url = f"/voice/vapi/{practice.integration_id}"
    assert vclient.post(url, json=body, headers=headers).status_code == 404


def test_tools_only_see_their_own_clinic(
    call: Call, practice: Practice, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    birch = make_clinic("Birch Dental")
    birch_ids = seed_practice(db, birch.id)
    seed_patient(db, birch.id, phone=None)  # the same person at another clinic
    [result] = call(("checkAvailability", {"service": birch_ids["checkup"]}))
    # Birch's service id is not a Maple service: treated as a name, and not found.
    assert result["success"] is False and result["error"] == "unknown_service"


# --- malformed payloads -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "message"),
        (b'{"message": {"type": "tool-calls", "toolCallList": []}}', "message.call.id"),
        (b'{"message": {"type": "tool-calls", "call": {"id": "c1"}}}', "message.toolCallList"),
        (
            b'{"message": {"type": "tool-calls", "call": {"id": "c1"}, "toolCallList": [{}]}}',
            "message.toolCallList[0].id",
        ),
    ],
)
def test_malformed_message_is_a_clear_problem(
    vclient: TestClient, practice: Practice, body: bytes, field: str
) -> None:
    response = vclient.post(
        f"/voice/vapi/{practice.integration_id}",
        content=body,
        headers={"X-Vapi-Secret": SECRET, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def test_malformed_tool_call_is_a_spoken_error(call: Call) -> None:
    results = call(
        ("checkAvailability", "{not json"),
        ("", {}),
        ("transferToMars", {}),
        ("checkAvailability", ["a", "list"]),  # type: ignore[arg-type]
    )
    assert [r["error"] for r in results] == [
        "malformed_tool_call",
        "malformed_tool_call",
        "unknown_tool",
        "malformed_tool_call",
    ]
    assert all(r["success"] is False and r["message"] for r in results)


def test_other_server_messages_are_acknowledged(vclient: TestClient, practice: Practice) -> None:
    body = {"message": {"type": "status-update", "status": "ended", "call": {"id": "c1"}}}
    response = vclient.post(
        f"/voice/vapi/{practice.integration_id}", json=body, headers={"X-Vapi-Secret": SECRET}
    )
    assert response.status_code == 200
    assert response.json() == {}


# --- the tools ----------------------------------------------------------------------------


def test_check_availability_natural_date(call: Call, practice: Practice) -> None:
    tuesday, after_dst = call(
        ("checkAvailability", {"service": "checkup", "when": "next Tuesday morning"}),
        ("checkAvailability", {"service": "General check-up", "when": "March 10 afternoon"}),
    )
    assert tuesday["success"] is True and tuesday["available"] is True
    starts = [s["start"] for s in tuesday["slots"]]
    # Said on Monday 2 March: the coming Tuesday (dateparser's reading), 08:00-12:00.
    assert starts[0] == "2026-03-03T09:00:00-05:00"
    assert all(s.startswith("2026-03-03T") and s < "2026-03-03T12" for s in starts)
    assert "Tuesday, March 3 at 9 AM, 9:30 AM or 10 AM" in tuesday["message"]
    # Toronto is on EDT (UTC-4) after the 8 March change; the afternoon starts at noon.
    assert after_dst["slots"][0]["start"] == "2026-03-10T12:00:00-04:00"


def test_check_availability_exact_time_with_arguments_as_string(call: Call) -> None:
    args = json.dumps({"service": "video", "provider": "Dr Hopper", "when": "tomorrow at 3pm"})
    [result] = call(("checkAvailability", args))
    assert result["available"] is True
    assert result["slots"][0]["start"] == "2026-03-03T15:00:00-05:00"
    assert result["slots"][0]["provider"] == "Dr. Grace Hopper"
    assert result["message"].startswith("Yes, Tuesday, March 3 at 3 PM is available")


def test_check_availability_bad_dates_are_spoken(call: Call) -> None:
    results = call(
        ("checkAvailability", {"service": "checkup", "when": "February 30"}),
        ("checkAvailability", {"service": "checkup", "when": "March 8 at 2:30am"}),
        ("checkAvailability", {"service": "root canal"}),
        ("checkAvailability", {"service": "checkup", "provider": "Dr. Nobody Atall"}),
    )
    assert [r["error"] for r in results] == [
        "invalid_date",
        "invalid_date",
        "unknown_service",
        "unknown_provider",
    ]
    assert "February 30 does not exist" in results[0]["message"]
    assert "clocks change" in results[1]["message"]  # the DST gap in Toronto
    assert "General check-up" in results[2]["message"]


def test_search_patients_verifies_and_get_patient_needs_it(
    call: Call, practice: Practice, db: Database
) -> None:
    # Unknown calling number: no verification yet, so no patient data.
    [denied] = call(("getPatient", {}), number="+14385550142")
    assert denied["success"] is False and denied["error"] == "verification_required"
    assert "date of birth" in denied["message"]
    assert "Tremblay" not in json.dumps(denied)
    [wrong] = call(("searchPatients", {**IDENTITY, "date_of_birth": "1980-03-06"}))
    assert wrong["found"] is False
    found, record = call(("searchPatients", IDENTITY), ("getPatient", {}))
    assert found["found"] is True and found["patient_id"] == practice.patient_id
    assert record["success"] is True and record["last_name"] == "Tremblay"
    assert record["date_of_birth"] == "1980-03-05"
    with db.read() as session:
        state = session.scalars(sa.select(VoiceCall)).one()
        assert (state.verified_patient_id, state.verified_via) == (practice.patient_id, "name_dob")
        reads = session.scalars(
            sa.select(AuditEvent).where(
                AuditEvent.resource_id == practice.patient_id, AuditEvent.phi.is_(True)
            )
        ).all()
        assert {e.actor_type for e in reads if e.action == "patient.read"} == {"integration"}


def test_calling_number_on_file_verifies(call: Call, practice: Practice) -> None:
    [record] = call(("getPatient", {}), number="(514) 555-0199", call_id="call-known")
    assert record["success"] is True and record["patient_id"] == practice.patient_id


def test_verification_does_not_leak_across_calls(call: Call) -> None:
    call(("searchPatients", IDENTITY), call_id="call-a", number=None)
    [other] = call(("getPatient", {}), call_id="call-b", number=None)
    assert other["error"] == "verification_required"


def test_create_patient_and_add_note(call: Call, db: Database) -> None:
    created, note = call(
        (
            "createPatient",
            {"first_name": "Jean", "last_name": "Dupuis", "date_of_birth": "1975-11-20"},
        ),
        ("addPatientNote", {"note": "Please call back about the referral."}),
        number="+14385550142",
    )
    assert created["success"] is True and created["created"] is True
    assert note["success"] is True
    with db.read() as session:
        stored = session.scalars(sa.select(PatientNote)).one()
        assert stored.patient_id == created["patient_id"]
        assert stored.author_type == "integration"
    [again] = call(
        (
            "createPatient",
            {"first_name": "Jean", "last_name": "Dupuis", "date_of_birth": "November 20 1975"},
        ),
        call_id="call-2",
    )
    assert again["created"] is False and again["patient_id"] == created["patient_id"]


def test_create_patient_refuses_bad_input(call: Call) -> None:
    results = call(
        ("createPatient", {"first_name": "Jean", "last_name": "Dupuis"}),
        (
            "createPatient",
            {"first_name": "Jean", "last_name": "Dupuis", "date_of_birth": "February 30 1975"},
        ),
        (
            "createPatient",
            {
                "first_name": "Jean",
                "last_name": "Dupuis",
                "date_of_birth": "1975-11-20",
                "email": "not-an-email",
            },
        ),
    )
    assert [r["error"] for r in results] == [
        "patient_details_required",
        "invalid_date",
        "invalid_input",
    ]
    assert "email" in results[2]["message"]


def test_add_note_needs_verification(call: Call, db: Database) -> None:
    [result] = call(("addPatientNote", {"note": "hello"}), number=None)
    assert result["error"] == "verification_required"
    with db.read() as session:
        assert session.scalars(sa.select(PatientNote)).all() == []


@pytest.mark.parametrize("tool", ["getPatientInsurance"])
def test_not_yet_available_tools(call: Call, tool: str) -> None:
    [result] = call((tool, {"amount": "20"}))
    assert result["success"] is False and result["error"] == "not_available"
    assert "not available for this clinic" in result["message"]


def test_book_reschedule_cancel(call: Call, practice: Practice) -> None:
    [booked] = call(
        (
            "bookAppointment",
            {"service": "check-up", "provider": "any", "start": "tomorrow at 10am", **IDENTITY},
        )
    )
    assert booked["success"] is True, booked
    assert booked["start"] == "2026-03-03T10:00:00-05:00"
    assert booked["confirmation_code"] in booked["message"]
    # The same slot again (any provider): the second provider takes it.
    [second] = call(
        (
            "bookAppointment",
            {
                "service": "check-up",
                "start": "2026-03-03T10:00:00-05:00",
                "first_name": "Jean",
                "last_name": "Dupuis",
                "date_of_birth": "1975-11-20",
            },
        ),
        call_id="call-other",
    )
    assert second["success"] is True and second["provider_id"] != booked["provider_id"]
    [third] = call(
        (
            "bookAppointment",
            {
                "service": "check-up",
                "start": "tomorrow at 10am",
                "first_name": "Ann",
                "last_name": "Other",
                "date_of_birth": "1990-01-01",
            },
        ),
        call_id="call-third",
    )
    assert third["success"] is False and third["error"] in {"slot_unavailable", "slot_taken"}
    assert third["slots"] and "not available" in third["message"]

    code = booked["confirmation_code"]
    [denied] = call(
        ("cancelAppointment", {"confirmation_code": code}), call_id="call-x", number=None
    )
    assert denied["error"] == "verification_required"
    moved, cancelled = call(
        (
            "rescheduleAppointment",
            {**IDENTITY, "confirmation_code": code, "new_start": "Wednesday at 2pm"},
        ),
        ("cancelAppointment", {"confirmation_code": code.replace("-", "").lower()}),
        call_id="call-y",
        number=None,
    )
    assert moved["success"] is True, moved
    assert moved["start"] == "2026-03-04T14:00:00-05:00"
    assert cancelled["success"] is True and cancelled["status"] == "cancelled"


def test_booking_needs_patient_details(call: Call) -> None:
    [result] = call(
        ("bookAppointment", {"service": "checkup", "start": "tomorrow at 10am"}), number=None
    )
    assert result["error"] == "patient_details_required"


# --- the log and metrics --------------------------------------------------------------------


def test_tool_call_log_and_metrics(
    call: Call, vclient: TestClient, practice: Practice, make_clinic: Callable[..., Clinic]
) -> None:
    call(
        ("checkAvailability", {"service": "checkup"}),
        ("searchPatients", IDENTITY),
        ("getPatient", {}),
        ("processPayment", {}),
        number=None,
    )
    headers = practice.clinic.headers
    log = vclient.get("/api/v1/voice/tool-calls", headers=headers)
    assert log.status_code == 200
    # Ids sort by millisecond only: order the rows of one message by their tool call id.
    rows = sorted(log.json()["data"], key=lambda r: r["tool_call_id"])
    assert [r["tool"] for r in rows] == [
        "checkAvailability",
        "searchPatients",
        "getPatient",
        "processPayment",
    ]
    assert [r["success"] for r in rows] == [True, True, True, False]
    assert [r["phi_accessed"] for r in rows] == [False, True, True, False]
    assert rows[2]["patient_id"] == practice.patient_id
    assert all(r["call_id"] == "call-7f3a" and r["latency_ms"] >= 0 for r in rows)
    only = vclient.get("/api/v1/voice/tool-calls?tool=getPatient", headers=headers).json()
    assert [r["tool"] for r in only["data"]] == ["getPatient"]

    metrics = vclient.get("/api/v1/voice/metrics", headers=headers)
    assert metrics.status_code == 200
    body = metrics.json()
    assert body["tool_calls"] == 4 and body["calls"] == 1
    assert body["success_rate"] == 0.75 and body["error_rate"] == 0.25
    assert body["internal_error_rate"] == 0.0
    assert body["p95_latency_ms"] is not None
    assert body["phi_accesses"] == 2
    assert body["phi_accesses_per_day"] == [{"date": "2026-03-02", "count": 2}]
    assert body["by_tool"]["processPayment"]["success_rate"] == 0.0

    bad = vclient.get(
        "/api/v1/voice/metrics?from=2026-03-02T00:00:00Z&to=2026-01-01T00:00:00Z", headers=headers
    )
    assert bad.status_code == 422
    other = make_clinic("Birch Dental")
    assert vclient.get("/api/v1/voice/tool-calls", headers=other.headers).json()["data"] == []
    assert vclient.get("/api/v1/voice/metrics", headers=other.headers).json()["tool_calls"] == 0


def test_voice_log_needs_permission(vclient: TestClient, practice: Practice, db: Database) -> None:
    from tests.conftest import add_key

    clinician = add_key(db, practice.clinic, "clinician")
    response = vclient.get("/api/v1/voice/tool-calls", headers=clinician.headers)
    assert response.status_code == 403


def test_assistant_config_prints_every_tool(
    practice: Practice, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from clinicbridge.cli import app as cli

    monkeypatch.setenv("CLINICBRIDGE_DATABASE_URL", database_url)
    monkeypatch.setenv("CLINICBRIDGE_MASTER_KEY_FILE", str(settings.master_key_file))
    monkeypatch.setenv("CLINICBRIDGE_BASE_URL", "https://bridge.example.org")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["voice", "assistant-config", "--integration", practice.integration_id]
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)
    url = f"https://bridge.example.org/voice/vapi/{practice.integration_id}"
    assert config["server_url"] == url
    tools = {t["function"]["name"]: t for t in config["tools"]}
    assert len(tools) == 11
    assert tools["bookAppointment"]["function"]["parameters"]["required"] == ["start"]
    assert all(t["server"]["url"] == url for t in tools.values())
    assert SECRET not in result.stdout
    shown = runner.invoke(
        cli,
        ["voice", "assistant-config", "--integration", practice.integration_id, "--with-secret"],
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["tools"][0]["server"]["headers"]["X-Vapi-Secret"] == SECRET
    missing = runner.invoke(cli, ["voice", "assistant-config", "--integration", "int_nope"])
    assert missing.exit_code != 0
