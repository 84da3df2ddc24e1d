"""Finding patients by what people say: fuzzy names, phones in any format, dates of birth.

Three users with three bars: staff search (ranked, forgiving), duplicate detection on
create (same DOB + similar name, or same phone), and caller verification for the
voice receptionist (strict: the identity must be unambiguous).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import sqlalchemy as sa
from rapidfuzz import fuzz
from sqlalchemy.orm import Session

from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.models import Tenant
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.patients.models import IDENTIFIER_SYSTEMS, Patient, PatientContact
from clinicbridge.patients.models import PatientIdentifier as Identifier
from clinicbridge.patients.normalize import fold, name_key, phone_e164, region_of

DUPLICATE_NAME_SCORE = 85  # same DOB and at least this similar: probably the same person
CALLER_NAME_SCORE = 90  # caller verification is stricter
SEARCH_TOKEN_SCORE = 75  # each word of a search must match some name this well
MAX_CANDIDATES = 10
SEARCH_SCAN = 500  # rows fetched for ranking at most


def tenant_region(session: Session, tenant_id: str) -> str:
    """The clinic's country, for reading national phone numbers."""
    timezone = session.scalar(sa.select(Tenant.timezone).where(Tenant.id == tenant_id))
    return region_of(timezone or "UTC")


def full_name_score(first: str, last: str, patient: Patient) -> float:
    """0-100 similarity of folded full names, word order ignored."""
    return float(
        fuzz.token_sort_ratio(
            f"{fold(first)} {fold(last)}", f"{patient.first_norm} {patient.last_norm}"
        )
    )


def patients_with_phones(session: Session, tenant_id: str, phones: Iterable[str]) -> set[str]:
    """Ids of this clinic's patients having any of the E.164 ``phones`` on file."""
    wanted = list(set(phones))
    if not wanted:
        return set()
    stmt = sa.select(PatientContact.patient_id).where(
        PatientContact.tenant_id == tenant_id,
        PatientContact.kind == "phone",
        PatientContact.value.in_(wanted),
    )
    return set(session.scalars(stmt))


def find_duplicates(
    session: Session,
    tenant_id: str,
    *,
    first_name: str,
    last_name: str,
    date_of_birth: date | None,
    phones: Sequence[str] = (),
    exclude_id: str | None = None,
) -> list[Patient]:
    """Patients that are probably this person: same DOB + similar name, or same phone."""
    found: dict[str, tuple[float, Patient]] = {}
    if date_of_birth is not None:
        stmt = scoped_select(Patient, tenant_id).where(Patient.date_of_birth == date_of_birth)
        for patient in session.scalars(stmt):
            score = full_name_score(first_name, last_name, patient)
            if score >= DUPLICATE_NAME_SCORE:
                found[patient.id] = (score, patient)
    by_phone = patients_with_phones(session, tenant_id, phones) - set(found)
    if by_phone:
        stmt = scoped_select(Patient, tenant_id).where(Patient.id.in_(by_phone))
        for patient in session.scalars(stmt):
            found[patient.id] = (full_name_score(first_name, last_name, patient), patient)
    found.pop(exclude_id or "", None)
    ranked = sorted(found.values(), key=lambda sp: (-sp[0], sp[1].id))
    return [patient for _, patient in ranked[:MAX_CANDIDATES]]


def match_caller(
    session: Session,
    tenant_id: str,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    date_of_birth: date | None = None,
    phone: str | None = None,
) -> Patient | None:
    """The one patient a caller is, or None: never a guess between two people.

    Name + date of birth: same DOB and the name equal once folded, or at least
    ``CALLER_NAME_SCORE`` similar (only the last name is compared when no first name
    is given). Otherwise the calling number, if exactly one patient has it on file.
    """
    if last_name and date_of_birth is not None:
        stmt = scoped_select(Patient, tenant_id).where(Patient.date_of_birth == date_of_birth)
        hits = [p for p in session.scalars(stmt) if _caller_name_matches(first_name, last_name, p)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            return None  # two people, same name and birthday: ask for more, do not guess
    if phone:
        try:
            e164 = phone_e164(phone, tenant_region(session, tenant_id))
        except ValueError:
            return None
        ids = patients_with_phones(session, tenant_id, [e164])
        if len(ids) == 1:
            return session.get(Patient, ids.pop())
    return None


def _caller_name_matches(first: str | None, last: str, patient: Patient) -> bool:
    if first:
        if (fold(first), fold(last)) == (patient.first_norm, patient.last_norm):
            return True
        return full_name_score(first, last, patient) >= CALLER_NAME_SCORE
    return fuzz.ratio(fold(last), patient.last_norm) >= CALLER_NAME_SCORE


def search_statement(
    session: Session,
    tenant_id: str,
    *,
    q: str | None,
    phone: str | None,
    date_of_birth: date | None,
    identifier: str | None,
) -> tuple[sa.Select[Patient], list[str]]:
    """The filtered SELECT and the folded words of ``q`` (ranked afterwards in Python)."""
    if q is None and phone is None and date_of_birth is None and identifier is None:
        raise InvalidInputError.one(
            "q", "give at least one of q, phone, date_of_birth, identifier", "missing"
        )
    stmt = scoped_select(Patient, tenant_id)
    if date_of_birth is not None:
        stmt = stmt.where(Patient.date_of_birth == date_of_birth)
    if phone is not None:
        try:
            e164 = phone_e164(phone, tenant_region(session, tenant_id))
        except ValueError as exc:
            raise InvalidInputError.one("phone", str(exc)) from None
        stmt = stmt.where(Patient.id.in_(_contact_owner(tenant_id, "phone", e164)))
    if identifier is not None:
        system, _, value = identifier.partition(":")
        if system not in IDENTIFIER_SYSTEMS or not value:
            raise InvalidInputError.one(
                "identifier",
                f"must be system:value with system one of {', '.join(IDENTIFIER_SYSTEMS)}",
            )
        owners = sa.select(Identifier.patient_id).where(
            Identifier.tenant_id == tenant_id,
            Identifier.system == system,
            Identifier.value == value,
        )
        stmt = stmt.where(Patient.id.in_(owners))
    words: list[str] = []
    if q is not None:
        words = fold(q).split()
        if not words:
            raise InvalidInputError.one("q", "must contain a name")
        stmt = stmt.where(_name_candidates(words))
    return stmt, words


def _contact_owner(tenant_id: str, kind: str, value: str) -> sa.Select[str]:
    return sa.select(PatientContact.patient_id).where(
        PatientContact.tenant_id == tenant_id,
        PatientContact.kind == kind,
        PatientContact.value == value,
    )


def _name_candidates(words: list[str]) -> sa.ColumnElement[bool]:
    """Rows worth ranking: a word is a prefix of a name, or sounds like the last name."""
    conditions: list[sa.ColumnElement[bool]] = []
    for word in words:
        conditions.append(Patient.first_norm.startswith(word, autoescape=True))
        conditions.append(Patient.last_norm.startswith(word, autoescape=True))
        key = name_key(word)
        if key:
            conditions.append(Patient.name_key == key)
    return sa.or_(*conditions)


def rank(patients: Iterable[Patient], words: list[str], limit: int) -> list[Patient]:
    """Patients whose names match every word (prefix or fuzzy), best first."""
    scored = []
    for patient in patients:
        score = min(_word_score(word, patient) for word in words)
        if score >= SEARCH_TOKEN_SCORE:
            scored.append((score, patient))
    scored.sort(key=lambda sp: (-sp[0], sp[1].last_norm, sp[1].first_norm, sp[1].id))
    return [patient for _, patient in scored[:limit]]


def _word_score(word: str, patient: Patient) -> float:
    parts = {patient.first_norm, patient.last_norm, *patient.first_norm.split()}
    parts.update(patient.last_norm.split())
    if any(part.startswith(word) for part in parts):
        return 100.0
    best = max(float(fuzz.ratio(word, part)) for part in parts)
    if name_key(word) and name_key(word) == patient.name_key:
        best = max(best, float(DUPLICATE_NAME_SCORE))  # sounds like the last name
    return best
