"""Patients of a clinic: create (with duplicate detection), read, search, update.

Every read of a record writes a ``patient.read`` PHI access event (actor, purpose)
in the caller's transaction; every change writes its own event, values masked.
Other modules use ``find_or_create_patient`` (public booking, voice),
``match_caller`` (voice verification), ``get_patient`` and ``patient_summary``.
Notes and consents live in ``records``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from rapidfuzz import fuzz
from sqlalchemy.orm import Session

from clinicbridge.audit import append_many, diff_of, event_for, record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ConflictError, FieldError, InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import DEFAULT_LIMIT, Page, paginate
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.patients.matching import (
    DUPLICATE_NAME_SCORE,
    SEARCH_SCAN,
    find_duplicates,
    full_name_score,
    match_caller,
    patients_with_phones,
    rank,
    search_statement,
    tenant_region,
)
from clinicbridge.patients.models import Patient, PatientContact, PatientIdentifier
from clinicbridge.patients.normalize import email_norm, fold, name_key, phone_e164
from clinicbridge.patients.schemas import (
    ContactOut,
    DuplicateCandidate,
    IdentifierIn,
    PatientCreate,
    PatientOut,
    PatientUpdate,
    PhoneIn,
)

__all__ = [
    "DuplicatePatientError",
    "audit_reads",
    "create_patient",
    "find_or_create_patient",
    "get_patient",
    "list_patients",
    "match_caller",
    "patient_out",
    "patient_summary",
    "search_patients",
    "update_patient",
]

RESOURCE = "patient"
READ = "patient.read"
# Every field of a patient is patient data: audit diffs show which changed, never values.
PHI_FIELDS = (
    "first_name",
    "last_name",
    "date_of_birth",
    "sex",
    "preferred_language",
    "address",
    "phones",
    "emails",
    "identifiers",
)
_SCALARS = ("first_name", "last_name", "date_of_birth", "sex", "preferred_language", "address")


class DuplicatePatientError(ConflictError):
    """A probable duplicate exists; ``candidates`` are the patients it may be."""

    type_slug = "duplicate-patient"
    title = "Possible duplicate patient"

    def __init__(self, candidates: list[Patient]) -> None:
        super().__init__(
            "A patient with the same date of birth and a similar name, or the same phone, "
            "already exists. Use one of the candidates, or repeat with force=true."
        )
        self.candidates = candidates
        # Taken now: once the transaction rolls back, the rows can no longer be read.
        self.candidate_ids = [p.id for p in candidates]
        self.candidate_views = [
            DuplicateCandidate.model_validate(p).model_dump(mode="json") for p in candidates
        ]

    def problem_extra(self) -> dict[str, object]:
        return {"candidates": self.candidate_views}


@dataclass(frozen=True)
class _Contacts:
    phones: list[tuple[str, str | None]]
    emails: list[str]


# --- reads ---------------------------------------------------------------------------


def audit_reads(session: Session, ctx: Ctx, patient_ids: Iterable[str], *, purpose: str) -> None:
    """One ``patient.read`` PHI access event per patient, in one INSERT."""
    events = [
        event_for(ctx, READ, RESOURCE, pid, phi=True, diff={"purpose": purpose})
        for pid in patient_ids
    ]
    append_many(session, events)


def get_patient(session: Session, ctx: Ctx, patient_id: str, *, purpose: str) -> Patient:
    """This clinic's patient (another clinic's is not found); records the access."""
    patient = _get(session, ctx, patient_id)
    audit_reads(session, ctx, [patient.id], purpose=purpose)
    return patient


def list_patients(
    session: Session,
    ctx: Ctx,
    *,
    limit: int = DEFAULT_LIMIT,
    starting_after: str | None = None,
    purpose: str = "list",
) -> Page[Patient]:
    page = paginate(
        session, scoped_select(Patient, ctx.tenant_id), Patient.id, limit, starting_after
    )
    audit_reads(session, ctx, [p.id for p in page.items], purpose=purpose)
    return page


def search_patients(
    session: Session,
    ctx: Ctx,
    *,
    q: str | None = None,
    phone: str | None = None,
    date_of_birth: date | None = None,
    identifier: str | None = None,
    limit: int = 20,
    purpose: str = "search",
) -> list[Patient]:
    """Patients matching every given criterion; with ``q``, ranked by name similarity.

    ``q`` ignores accents and case and matches name prefixes ("hel" → Hélène) and
    near misses ("Tremblai" → Tremblay); ``phone`` takes any format; ``identifier``
    is ``system:value`` (``mrn:12345``).
    """
    stmt, words = search_statement(
        session,
        ctx.tenant_id,
        q=q,
        phone=phone,
        date_of_birth=date_of_birth,
        identifier=identifier,
    )
    if words:
        scan = stmt.order_by(Patient.last_norm, Patient.id).limit(SEARCH_SCAN)
        found = rank(session.scalars(scan), words, limit)
    else:
        order = (Patient.last_norm, Patient.first_norm, Patient.id)
        found = list(session.scalars(stmt.order_by(*order).limit(limit)))
    audit_reads(session, ctx, [p.id for p in found], purpose=purpose)
    return found


def patient_summary(patient: Patient) -> dict[str, Any]:
    """The few fields other modules show (confirmations, the voice assistant)."""
    return {
        "id": patient.id,
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "date_of_birth": patient.date_of_birth.isoformat() if patient.date_of_birth else None,
        "preferred_language": patient.preferred_language,
    }


def patient_out(session: Session, patients: Sequence[Patient]) -> list[PatientOut]:
    """API views of ``patients`` with their phones, e-mails and identifiers (two queries)."""
    ids = [p.id for p in patients]
    contacts: dict[str, list[PatientContact]] = defaultdict(list)
    identifiers: dict[str, dict[str, str]] = defaultdict(dict)
    if ids:
        stmt = (
            sa.select(PatientContact)
            .where(PatientContact.patient_id.in_(ids))
            .order_by(PatientContact.is_primary.desc(), PatientContact.id)
        )
        for contact in session.scalars(stmt):
            contacts[contact.patient_id].append(contact)
        id_stmt = sa.select(PatientIdentifier).where(PatientIdentifier.patient_id.in_(ids))
        for ident in session.scalars(id_stmt):
            identifiers[ident.patient_id][ident.system] = ident.value
    out = []
    for patient in patients:
        view = PatientOut.model_validate(patient)
        mine = contacts[patient.id]
        view.phones = [ContactOut.model_validate(c) for c in mine if c.kind == "phone"]
        view.emails = [ContactOut.model_validate(c) for c in mine if c.kind == "email"]
        view.identifiers = identifiers[patient.id]
        out.append(view)
    return out


# --- writes --------------------------------------------------------------------------


def create_patient(
    session: Session, ctx: Ctx, data: PatientCreate, *, force: bool = False
) -> Patient:
    """Create a patient; DuplicatePatientError if one probably exists, unless ``force``."""
    contacts = _normalized(session, ctx.tenant_id, data.all_phones(), data.all_emails())
    _check_identifiers(session, ctx.tenant_id, data.identifiers, None)
    if not force:
        candidates = find_duplicates(
            session,
            ctx.tenant_id,
            first_name=data.first_name,
            last_name=data.last_name,
            date_of_birth=data.date_of_birth,
            phones=[number for number, _ in contacts.phones],
        )
        if candidates:
            raise DuplicatePatientError(candidates)
    fields = data.model_dump(include=set(_SCALARS))
    return _insert(session, ctx, fields, contacts, data.identifiers, extra={"forced": force})


def find_or_create_patient(
    session: Session,
    ctx: Ctx,
    *,
    first_name: str,
    last_name: str,
    date_of_birth: date | None,
    phone: str | None = None,
    email: str | None = None,
    source: str,
) -> tuple[Patient, bool]:
    """The patient these details describe, created if none matches; ``(patient, created)``.

    For public booking and the voice assistant: a match is the same date of birth with
    a similar full name, or with the same phone and a similar first name ("Kate" for
    Katherine; not twins Olivia and Oliver). Without a DOB: similar name and same phone.
    Nothing of a matched patient changes. Bad values raise InvalidInputError naming
    ``first_name``, ``last_name``, ``date_of_birth``, ``phone`` or ``email``.
    """
    first, last = _name("first_name", first_name), _name("last_name", last_name)
    if date_of_birth is not None and date_of_birth >= ctx.now.date():
        raise InvalidInputError.one("date_of_birth", "must be in the past")
    phones = [("phone", PhoneIn(number=phone))] if phone else []
    contacts = _normalized(session, ctx.tenant_id, phones, [("email", email)] if email else [])
    numbers = [number for number, _ in contacts.phones]
    match = _best_match(session, ctx.tenant_id, first, last, date_of_birth, numbers)
    if match is not None:
        record(session, ctx, "patient.match", RESOURCE, match.id, phi=True, diff={"source": source})
        return match, False
    fields = {"first_name": first, "last_name": last, "date_of_birth": date_of_birth}
    patient = _insert(session, ctx, fields, contacts, [], extra={"source": source})
    return patient, True


def update_patient(session: Session, ctx: Ctx, patient_id: str, data: PatientUpdate) -> Patient:
    """Change the given fields; the lists given replace the ones on file."""
    patient = _get(session, ctx, patient_id)
    changes = data.model_dump(exclude_unset=True)
    for required in ("first_name", "last_name"):
        if required in changes and changes[required] is None:
            raise InvalidInputError.one(required, "cannot be removed")
    before: dict[str, Any] = {f: getattr(patient, f) for f in _SCALARS if f in changes}
    after: dict[str, Any] = {f: changes[f] for f in _SCALARS if f in changes}
    contacts = _normalized(
        session,
        ctx.tenant_id,
        [(f"phones.{i}.number", p) for i, p in enumerate(data.phones or [])],
        [(f"emails.{i}", str(e)) for i, e in enumerate(data.emails or [])],
    )
    if data.identifiers is not None:
        _check_identifiers(session, ctx.tenant_id, data.identifiers, patient.id)
    for field, value in after.items():
        setattr(patient, field, value)
    _set_norms(patient)
    current = patient_out(session, [patient])[0]
    if data.phones is not None:
        before["phones"] = [c.value for c in current.phones]
        after["phones"] = [number for number, _ in contacts.phones]
        _replace_contacts(session, patient, "phone", contacts.phones)
    if data.emails is not None:
        before["emails"] = [c.value for c in current.emails]
        after["emails"] = contacts.emails
        _replace_contacts(session, patient, "email", [(e, None) for e in contacts.emails])
    if data.identifiers is not None:
        before["identifiers"] = current.identifiers
        after["identifiers"] = {i.system: i.value for i in data.identifiers}
        _replace_identifiers(session, patient, data.identifiers)
    diff = diff_of(before, after, phi_fields=PHI_FIELDS)
    if diff:
        patient.updated_at = ctx.now
        session.flush()
        record(session, ctx, "patient.update", RESOURCE, patient.id, phi=True, diff=diff)
    return patient


# --- helpers -------------------------------------------------------------------------


def _get(session: Session, ctx: Ctx, patient_id: str) -> Patient:
    return get_scoped(session, Patient, ctx.tenant_id, id=patient_id)


def _name(field: str, value: str) -> str:
    cleaned = " ".join(value.split())
    if not cleaned or len(cleaned) > 100:
        raise InvalidInputError.one(field, "must be 1 to 100 characters")
    return cleaned


def _best_match(
    session: Session,
    tenant_id: str,
    first: str,
    last: str,
    date_of_birth: date | None,
    phones: list[str],
) -> Patient | None:
    phone_owners = patients_with_phones(session, tenant_id, phones)
    stmt = scoped_select(Patient, tenant_id)
    if date_of_birth is not None:
        stmt = stmt.where(Patient.date_of_birth == date_of_birth)
    elif phone_owners:
        stmt = stmt.where(Patient.id.in_(phone_owners))
    else:
        return None
    scored = []
    for patient in session.scalars(stmt):
        score = full_name_score(first, last, patient)
        similar = score >= DUPLICATE_NAME_SCORE
        # Same phone and DOB, first name said differently ("Kate" for Katherine). Twins
        # share both, so the first names must still agree: a duplicate is safer than
        # booking one twin in the other's record.
        same_phone = patient.id in phone_owners and (
            fuzz.partial_ratio(fold(first), patient.first_norm) >= DUPLICATE_NAME_SCORE
        )
        # With a DOB: similar name or same phone; without one: both.
        if (similar or same_phone) if date_of_birth is not None else (similar and same_phone):
            scored.append((score, patient))
    if not scored:
        return None
    return min(scored, key=lambda sp: (-sp[0], sp[1].id))[1]


def _normalized(
    session: Session,
    tenant_id: str,
    phones: Sequence[tuple[str, PhoneIn]],
    emails: Sequence[tuple[str, str]],
) -> _Contacts:
    """Phones as E.164 (read in the clinic's country), e-mails lower-cased, duplicates
    dropped; one InvalidInputError naming every bad field. Items are (field, value)."""
    errors: list[FieldError] = []
    region = tenant_region(session, tenant_id) if phones else "US"
    out_phones: dict[str, str | None] = {}
    for field, phone in phones:
        try:
            out_phones.setdefault(phone_e164(phone.number, region), phone.label)
        except ValueError as exc:
            errors.append(FieldError(field, str(exc)))
    out_emails: dict[str, None] = {}
    for field, email in emails:
        try:
            out_emails.setdefault(email_norm(email), None)
        except ValueError as exc:
            errors.append(FieldError(field, str(exc)))
    if errors:
        raise InvalidInputError(errors)
    return _Contacts(list(out_phones.items()), list(out_emails))


def _check_identifiers(
    session: Session, tenant_id: str, identifiers: Sequence[IdentifierIn], patient_id: str | None
) -> None:
    """ConflictError if another patient of the clinic already has one of these ids."""
    for ident in identifiers:
        owner = session.scalar(
            sa.select(PatientIdentifier.patient_id).where(
                PatientIdentifier.tenant_id == tenant_id,
                PatientIdentifier.system == ident.system,
                PatientIdentifier.value == ident.value,
            )
        )
        if owner is not None and owner != patient_id:
            raise ConflictError(
                f"Another patient of this clinic already has this {ident.system} identifier."
            )


def _set_norms(patient: Patient) -> None:
    patient.first_norm = fold(patient.first_name)[:100]
    patient.last_norm = fold(patient.last_name)[:100]
    patient.name_key = name_key(patient.last_name)


def _insert(
    session: Session,
    ctx: Ctx,
    fields: dict[str, Any],
    contacts: _Contacts,
    identifiers: Sequence[IdentifierIn],
    *,
    extra: dict[str, Any],
) -> Patient:
    patient = Patient(
        id=new_id("pat"),
        tenant_id=ctx.tenant_id,
        created_by=ctx.actor_id,
        created_at=ctx.now,
        updated_at=ctx.now,
        **fields,
    )
    _set_norms(patient)
    session.add(patient)
    session.flush()
    _replace_contacts(session, patient, "phone", contacts.phones)
    _replace_contacts(session, patient, "email", [(e, None) for e in contacts.emails])
    _replace_identifiers(session, patient, identifiers)
    after = dict(fields)
    after["phones"] = [number for number, _ in contacts.phones]
    after["emails"] = contacts.emails
    after["identifiers"] = {i.system: i.value for i in identifiers}
    diff = diff_of({}, after, phi_fields=PHI_FIELDS) or {}
    diff.update({key: {"new": value} for key, value in extra.items()})
    record(session, ctx, "patient.create", RESOURCE, patient.id, phi=True, diff=diff)
    return patient


def _replace_contacts(
    session: Session, patient: Patient, kind: str, values: list[tuple[str, str | None]]
) -> None:
    session.execute(
        sa.delete(PatientContact).where(
            PatientContact.patient_id == patient.id, PatientContact.kind == kind
        )
    )
    for position, (value, label) in enumerate(values):
        session.add(
            PatientContact(
                id=new_id("pco"),
                tenant_id=patient.tenant_id,
                patient_id=patient.id,
                kind=kind,
                value=value,
                label=label,
                is_primary=position == 0,
            )
        )
    session.flush()


def _replace_identifiers(
    session: Session, patient: Patient, identifiers: Sequence[IdentifierIn]
) -> None:
    session.execute(sa.delete(PatientIdentifier).where(PatientIdentifier.patient_id == patient.id))
    for ident in identifiers:
        session.add(
            PatientIdentifier(
                id=new_id("pid"),
                tenant_id=patient.tenant_id,
                patient_id=patient.id,
                system=ident.system,
                value=ident.value,
            )
        )
    session.flush()
