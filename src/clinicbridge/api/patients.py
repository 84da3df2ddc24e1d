"""``/api/v1/patients``: records, search, notes and consents.

Every read of patient data is audited with its purpose, taken from the
``X-Access-Purpose`` header ("treatment" when absent); reads therefore use a write
transaction. The access log is ``GET /patients/{id}/access-log`` (``api.audit``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.problems import problem_response
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import Problem
from clinicbridge.patients import records, service
from clinicbridge.patients.schemas import (
    ConsentsOut,
    ConsentsUpdate,
    DataSharingIn,
    DataSharingOut,
    NoteCreate,
    NoteOut,
    PatientCreate,
    PatientOut,
    PatientUpdate,
)

router = APIRouter(tags=["patients"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("patients:read")]
Writer = Annotated[Ctx, require("patients:write")]
NoteWriter = Annotated[Ctx, require("patients:notes")]
PatientId = Annotated[str, Path(max_length=64)]
Purpose = Annotated[
    str,
    Header(
        alias="X-Access-Purpose",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:-]*$",
        description="Why the record is read (treatment, billing, ...); kept in the audit log.",
    ),
]
Text = Annotated[str | None, Query(min_length=1, max_length=200)]
PATIENTS = "/patients"
ONE = PATIENTS + "/{patient_id}"


@router.get(PATIENTS, response_model=ListOut[PatientOut])
def list_patients(
    db: DB,
    ctx: Reader,
    page: Paging,
    purpose: Purpose = "treatment",
) -> ListOut[PatientOut]:
    """The clinic's patients by id; use ``/patients/search`` to find someone."""
    with db.write() as session:
        found = service.list_patients(
            session, ctx, limit=page.limit, starting_after=page.starting_after, purpose=purpose
        )
        views = {v.id: v for v in service.patient_out(session, found.items)}
        return ListOut.of(found, lambda p: views[p.id])


@router.get(PATIENTS + "/search", response_model=ListOut[PatientOut])
def search_patients(
    db: DB,
    ctx: Reader,
    q: Text = None,
    phone: Annotated[str | None, Query(min_length=3, max_length=40)] = None,
    date_of_birth: Annotated[date | None, Query()] = None,
    identifier: Text = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    purpose: Purpose = "search",
) -> ListOut[PatientOut]:
    """Patients matching all given criteria; with ``q``, best name match first.

    ``q``: name words, accents and case ignored, prefixes and near misses match;
    ``phone``: any format; ``identifier``: ``mrn:123``, ``pms:...``, ``fhir:...``.
    """
    with db.write() as session:
        found = service.search_patients(
            session,
            ctx,
            q=q,
            phone=phone,
            date_of_birth=date_of_birth,
            identifier=identifier,
            limit=limit,
            purpose=purpose,
        )
        return ListOut[PatientOut](data=service.patient_out(session, found))


@router.post(PATIENTS, status_code=201, response_model=PatientOut)
def create_patient(
    body: PatientCreate,
    request: Request,
    db: DB,
    ctx: Writer,
    force: Annotated[bool, Query(description="Create even if a duplicate is likely.")] = False,
) -> PatientOut | Response:
    """Create a patient. A likely duplicate answers 409 with ``candidates`` unless ``force``."""
    try:
        with db.write() as session:
            patient = service.create_patient(session, ctx, body, force=force)
            return service.patient_out(session, [patient])[0]
    except service.DuplicatePatientError as exc:
        # The candidates are patient data shown to the caller: that is an access too.
        with db.write() as session:
            service.audit_reads(session, ctx, exc.candidate_ids, purpose="duplicate_check")
        problem = Problem.from_error(exc)
        problem.extra.update(exc.problem_extra())
        return problem_response(problem, getattr(request.state, "request_id", None))


@router.get(ONE, response_model=PatientOut)
def get_patient(
    patient_id: PatientId, db: DB, ctx: Reader, purpose: Purpose = "treatment"
) -> PatientOut:
    with db.write() as session:
        patient = service.get_patient(session, ctx, patient_id, purpose=purpose)
        return service.patient_out(session, [patient])[0]


@router.patch(ONE, response_model=PatientOut)
def update_patient(patient_id: PatientId, body: PatientUpdate, db: DB, ctx: Writer) -> PatientOut:
    """Change the given fields; ``phones``, ``emails``, ``identifiers`` replace the lists."""
    with db.write() as session:
        patient = service.update_patient(session, ctx, patient_id, body)
        return service.patient_out(session, [patient])[0]


@router.get(ONE + "/notes", response_model=ListOut[NoteOut])
def list_notes(
    patient_id: PatientId, db: DB, ctx: Reader, page: Paging, purpose: Purpose = "treatment"
) -> ListOut[NoteOut]:
    with db.write() as session:
        found = records.list_notes(
            session,
            ctx,
            patient_id,
            limit=page.limit,
            starting_after=page.starting_after,
            purpose=purpose,
        )
        return ListOut.of(found, NoteOut.model_validate)


@router.post(ONE + "/notes", status_code=201, response_model=NoteOut)
def add_note(patient_id: PatientId, body: NoteCreate, db: DB, ctx: NoteWriter) -> NoteOut:
    """Append a note, authored by the caller. Notes cannot be edited or deleted."""
    with db.write() as session:
        return NoteOut.model_validate(records.add_note(session, ctx, patient_id, body.body))


@router.get(ONE + "/consents", response_model=ConsentsOut)
def get_consents(
    patient_id: PatientId, db: DB, ctx: Reader, purpose: Purpose = "treatment"
) -> ConsentsOut:
    """Consent per channel and per integration now, and every change before."""
    with db.write() as session:
        return records.consents(session, ctx, patient_id, purpose=purpose)


@router.put(ONE + "/consents", response_model=ConsentsOut)
def set_consents(patient_id: PatientId, body: ConsentsUpdate, db: DB, ctx: Writer) -> ConsentsOut:
    """Record communication consent for the given channels (others unchanged)."""
    with db.write() as session:
        return records.set_consents(session, ctx, patient_id, body)


@router.post(ONE + "/data-sharing", status_code=201, response_model=DataSharingOut)
def set_data_sharing(
    patient_id: PatientId, body: DataSharingIn, db: DB, ctx: Writer
) -> DataSharingOut:
    """Grant or revoke sharing this patient's data with one of the clinic's integrations."""
    with db.write() as session:
        return records.set_data_sharing(session, ctx, patient_id, body)
