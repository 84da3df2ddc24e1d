"""The patients functions other modules call: find_or_create, match_caller, summary."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.db.engine import Database
from clinicbridge.patients import service
from clinicbridge.patients.models import Patient
from clinicbridge.patients.schemas import PatientCreate
from tests.conftest import Clinic

DOB = date(1984, 3, 12)


def _ctx(clinic: Clinic) -> Ctx:
    return Ctx(
        tenant_id=clinic.id,
        actor_type="system",
        actor_id="public_booking",
        role="system",
        permissions=frozenset(),
        now=datetime(2025, 6, 2, 14, 0, tzinfo=UTC),
    )


def _find_or_create(db: Database, clinic: Clinic, **kw: object) -> tuple[str, bool]:
    args: dict[str, object] = {
        "first_name": "Hélène",
        "last_name": "Tremblay",
        "date_of_birth": DOB,
        "phone": "(514) 555-0199",
        "email": "helene@example.com",
        "source": "public_booking",
    }
    args.update(kw)
    with db.write() as session:
        patient, created = service.find_or_create_patient(session, _ctx(clinic), **args)  # type: ignore[arg-type]
        return patient.id, created


def test_find_or_create_matches_dob_and_similar_name_or_phone(db: Database, clinic: Clinic) -> None:
    pid, created = _find_or_create(db, clinic)
    assert created
    assert _find_or_create(db, clinic, first_name="helene", last_name="TREMBLAI", phone=None) == (
        pid,
        False,
    )
    # Same DOB and phone, the first name shortened: same person.
    kate, _ = _find_or_create(
        db, clinic, first_name="Katherine", last_name="Gagnon", phone="5145550123"
    )
    assert _find_or_create(db, clinic, first_name="Kate", last_name="G.", phone="5145550123") == (
        kate,
        False,
    )
    # Twins: same DOB, same parent's phone, same last name, other first name.
    olivia, _ = _find_or_create(
        db, clinic, first_name="Olivia", last_name="Roy", phone="5145550177"
    )
    oliver, created = _find_or_create(
        db, clinic, first_name="Oliver", last_name="Roy", phone="5145550177"
    )
    assert created and oliver != olivia
    # Same name, another birthday and no phone: someone else.
    other, created = _find_or_create(db, clinic, date_of_birth=date(1990, 1, 1), phone=None)
    assert created and other != pid
    # No DOB: needs both the name and the phone.
    assert _find_or_create(db, clinic, date_of_birth=None) == (pid, False)
    assert _find_or_create(db, clinic, date_of_birth=None, phone="+15145550100")[1] is True
    with db.read() as session:
        actions = session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.resource_id == pid)
        ).all()
    assert actions.count("patient.match") == 2 and actions.count("patient.create") == 1


def test_find_or_create_is_per_clinic(db: Database, make_clinic: Callable[..., Clinic]) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    mine, _ = _find_or_create(db, maple)
    theirs, created = _find_or_create(db, birch)
    assert created and theirs != mine


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"phone": "not a phone"}, "phone"),
        ({"email": "nope"}, "email"),
        ({"first_name": "  "}, "first_name"),
        ({"date_of_birth": date(2030, 1, 1)}, "date_of_birth"),
    ],
)
def test_find_or_create_bad_input_names_the_field(
    db: Database, clinic: Clinic, kw: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        _find_or_create(db, clinic, **kw)
    assert [e.field for e in info.value.errors] == [field]
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 0


def test_match_caller(db: Database, clinic: Clinic) -> None:
    pid, _ = _find_or_create(db, clinic)
    with db.read() as session:

        def match(**kw: object) -> str | None:
            found = service.match_caller(session, clinic.id, **kw)  # type: ignore[arg-type]
            return found.id if found else None

        assert match(first_name="helene", last_name="tremblay", date_of_birth=DOB) == pid
        assert match(last_name="Tremblay", date_of_birth=DOB) == pid
        assert (
            match(first_name="Helene", last_name="Tremblay", date_of_birth=date(1984, 3, 13))
            is None
        )
        assert match(first_name="Marc", last_name="Tremblay", date_of_birth=DOB) is None
        assert match(phone="514-555-0199") == pid
        assert match(phone="+1 514 555 0100") is None
        assert match(phone="garbage") is None
        assert match() is None
        assert service.match_caller(session, "ten_other", phone="5145550199") is None


def test_match_caller_refuses_ambiguity(db: Database, clinic: Clinic) -> None:
    _find_or_create(db, clinic)
    with db.write() as session:  # a second patient with the same phone (a parent, say)
        data = PatientCreate(first_name="Marc", last_name="Gagnon", phone="5145550199")
        service.create_patient(session, _ctx(clinic), data, force=True)
    with db.read() as session:
        assert service.match_caller(session, clinic.id, phone="5145550199") is None


def test_get_patient_audits_and_summary(db: Database, make_clinic: Callable[..., Clinic]) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    pid, _ = _find_or_create(db, maple)
    with db.write() as session:
        patient = service.get_patient(session, _ctx(maple), pid, purpose="voice")
        assert service.patient_summary(patient) == {
            "id": pid,
            "first_name": "Hélène",
            "last_name": "Tremblay",
            "date_of_birth": "1984-03-12",
            "preferred_language": None,
        }
        with pytest.raises(NotFoundError):
            service.get_patient(session, _ctx(birch), pid, purpose="voice")
    with db.read() as session:
        read = session.scalars(
            sa.select(AuditEvent).where(
                AuditEvent.resource_id == pid, AuditEvent.action == "patient.read"
            )
        ).one()
    assert read.phi and read.diff == {"purpose": "voice"} and read.actor_id == "public_booking"
