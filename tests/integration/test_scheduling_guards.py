"""The database's own guarantees under the booking engine: active claims of one
provider never overlap (PostgreSQL exclusion constraint, SQLite trigger), and
patient notes are append-only. Tested on the tables directly, below any Python check."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.patients.models import Patient, PatientNote
from clinicbridge.scheduling.models import Provider, Service, TimeClaim
from tests.conftest import Clinic

NOW = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)


def _provider_and_service(db: Database, tenant_id: str) -> tuple[str, str]:
    with db.write() as session:
        provider = Provider(
            id=new_id("prv"),
            tenant_id=tenant_id,
            display_name="Dr. Test",
            timezone="America/Toronto",
            is_active=True,
            created_at=NOW,
            updated_at=NOW,
        )
        service = Service(
            id=new_id("svc"),
            tenant_id=tenant_id,
            name="Consultation",
            duration_minutes=30,
            slot_interval_minutes=15,
            capacity=1,
            modality="in_person",
            created_at=NOW,
            updated_at=NOW,
        )
        session.add_all([provider, service])
        return provider.id, service.id


def _claim(
    tenant_id: str, provider_id: str, service_id: str, start: datetime, minutes: int = 30
) -> TimeClaim:
    end = start + timedelta(minutes=minutes)
    return TimeClaim(
        id=new_id("clm"),
        tenant_id=tenant_id,
        provider_id=provider_id,
        service_id=service_id,
        starts_at=start,
        ends_at=end,
        blocked_from=start,
        blocked_until=end,
        capacity=1,
        seats_taken=1,
        active=True,
    )


def test_overlapping_active_claims_are_refused(db: Database, clinic: Clinic) -> None:
    provider_id, service_id = _provider_and_service(db, clinic.id)
    with db.write() as session:
        session.add(_claim(clinic.id, provider_id, service_id, NOW))
    for start in (NOW, NOW + timedelta(minutes=29), NOW - timedelta(minutes=29)):
        with pytest.raises(IntegrityError, match="time_claims"), db.write() as session:
            session.add(_claim(clinic.id, provider_id, service_id, start))
            session.flush()
    # touching ranges are fine: [14:00, 14:30) then [14:30, 15:00)
    with db.write() as session:
        session.add(_claim(clinic.id, provider_id, service_id, NOW + timedelta(minutes=30)))
        session.add(_claim(clinic.id, provider_id, service_id, NOW - timedelta(minutes=30)))
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(TimeClaim)) == 3


def test_a_released_claim_frees_the_time_and_cannot_come_back_over_another(
    db: Database, clinic: Clinic
) -> None:
    provider_id, service_id = _provider_and_service(db, clinic.id)
    first = _claim(clinic.id, provider_id, service_id, NOW)
    with db.write() as session:
        session.add(first)
    with db.write() as session:
        session.execute(sa.update(TimeClaim).where(TimeClaim.id == first.id).values(active=False))
        session.add(_claim(clinic.id, provider_id, service_id, NOW + timedelta(minutes=10)))
    with pytest.raises(IntegrityError, match="time_claims"), db.write() as session:
        session.execute(sa.update(TimeClaim).where(TimeClaim.id == first.id).values(active=True))


def test_other_providers_may_overlap(db: Database, clinic: Clinic) -> None:
    provider_a, service_id = _provider_and_service(db, clinic.id)
    provider_b, _ = _provider_and_service(db, clinic.id)
    with db.write() as session:
        session.add(_claim(clinic.id, provider_a, service_id, NOW))
        session.add(_claim(clinic.id, provider_b, service_id, NOW))


def test_patient_notes_cannot_be_edited_or_deleted(db: Database, clinic: Clinic) -> None:
    with db.write() as session:
        patient = Patient(
            id=new_id("pat"),
            tenant_id=clinic.id,
            first_name="Test",
            last_name="Patient",
            first_norm="test",
            last_norm="patient",
            name_key="PTNT",
            date_of_birth=date(1980, 1, 2),
            created_by="test",
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(patient)
        session.flush()
        note = PatientNote(
            id=new_id("note"),
            tenant_id=clinic.id,
            patient_id=patient.id,
            author_type="api_key",
            author_id="key_test",
            body="Prefers morning appointments.",
            created_at=NOW,
        )
        session.add(note)
    for statement in (
        sa.update(PatientNote).where(PatientNote.id == note.id).values(body="changed"),
        sa.delete(PatientNote).where(PatientNote.id == note.id),
    ):
        with pytest.raises(DBAPIError, match="append-only"), db.write() as session:
            session.execute(statement)
    # ...but they go with their patient
    with db.write() as session:
        session.execute(sa.delete(Patient).where(Patient.id == patient.id))
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(PatientNote)) == 0
