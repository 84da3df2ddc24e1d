"""What is recorded about a patient over time: notes and consents, append-only.

Notes are authored by the caller and never edited (database triggers refuse UPDATE
and DELETE). Consents are rows of changes: the latest per channel (or per
integration) is the current state, all of them are the history.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import get_scoped
from clinicbridge.integrations.models import Integration
from clinicbridge.patients.models import (
    CHANNELS,
    CommunicationConsent,
    DataSharingConsent,
    Patient,
    PatientNote,
)
from clinicbridge.patients.schemas import (
    ConsentOut,
    ConsentsOut,
    ConsentsUpdate,
    DataSharingIn,
    DataSharingOut,
)
from clinicbridge.patients.service import RESOURCE, audit_reads


def _patient(session: Session, ctx: Ctx, patient_id: str) -> Patient:
    return get_scoped(session, Patient, ctx.tenant_id, id=patient_id)


# --- notes ---------------------------------------------------------------------------


def add_note(session: Session, ctx: Ctx, patient_id: str, body: str) -> PatientNote:
    """Append a note authored by the caller."""
    patient = _patient(session, ctx, patient_id)
    note = PatientNote(
        id=new_id("pnt"),
        tenant_id=ctx.tenant_id,
        patient_id=patient.id,
        author_type=ctx.actor_type,
        author_id=ctx.actor_id,
        body=body,
        created_at=ctx.now,
    )
    session.add(note)
    session.flush()
    record(
        session, ctx, "patient.note.create", RESOURCE, patient.id, phi=True, diff={"note": note.id}
    )
    return note


def list_notes(
    session: Session,
    ctx: Ctx,
    patient_id: str,
    *,
    limit: int,
    starting_after: str | None,
    purpose: str,
) -> Page[PatientNote]:
    """A patient's notes, oldest first; reading them is a PHI access."""
    patient = _patient(session, ctx, patient_id)
    stmt = sa.select(PatientNote).where(
        PatientNote.tenant_id == ctx.tenant_id, PatientNote.patient_id == patient.id
    )
    page = paginate(session, stmt, PatientNote.id, limit, starting_after)
    audit_reads(session, ctx, [patient.id], purpose=purpose)
    return page


# --- consents ------------------------------------------------------------------------


def consents(session: Session, ctx: Ctx, patient_id: str, *, purpose: str) -> ConsentsOut:
    """Current consents per channel and per integration, with their histories."""
    patient = _patient(session, ctx, patient_id)
    audit_reads(session, ctx, [patient.id], purpose=purpose)
    return _view(session, patient)


def set_consents(session: Session, ctx: Ctx, patient_id: str, data: ConsentsUpdate) -> ConsentsOut:
    """Record the given channels' consent; a channel already in that state is left alone."""
    patient = _patient(session, ctx, patient_id)
    current = _current_channels(session, patient)
    changes: dict[str, Any] = {}
    for item in data.consents:
        now = current.get(item.channel)
        if now is not None and (now.granted, now.source) == (item.granted, item.source):
            continue
        record_consent(session, ctx, patient.id, item.channel, item.granted, item.source)
        changes[item.channel] = {"old": None if now is None else now.granted, "new": item.granted}
    if changes:
        record(session, ctx, "patient.consent.update", RESOURCE, patient.id, phi=True, diff=changes)
    return _view(session, patient)


def record_consent(
    session: Session, ctx: Ctx, patient_id: str, channel: str, granted: bool, source: str
) -> CommunicationConsent:
    """One consent change (also for messaging: an SMS "STOP" is ``granted=False``)."""
    if channel not in CHANNELS:
        raise InvalidInputError.one("channel", f"must be one of {', '.join(CHANNELS)}")
    row = CommunicationConsent(
        id=new_id("ccn"),
        tenant_id=ctx.tenant_id,
        patient_id=patient_id,
        channel=channel,
        granted=granted,
        source=source[:64],
        recorded_by=ctx.actor_id,
        recorded_at=ctx.now,
    )
    session.add(row)
    session.flush()
    return row


def latest_consent(session: Session, tenant_id: str, patient_id: str, channel: str) -> bool | None:
    """The patient's latest word on being contacted on ``channel``; None if never given."""
    return session.scalar(
        sa.select(CommunicationConsent.granted)
        .where(
            CommunicationConsent.tenant_id == tenant_id,
            CommunicationConsent.patient_id == patient_id,
            CommunicationConsent.channel == channel,
        )
        .order_by(CommunicationConsent.recorded_at.desc(), CommunicationConsent.id.desc())
        .limit(1)
    )


def set_data_sharing(
    session: Session, ctx: Ctx, patient_id: str, data: DataSharingIn
) -> DataSharingOut:
    """Grant or revoke sharing this patient's data with one of the clinic's integrations.

    Granting needs an existing integration; revoking also works for a deleted one
    that was granted before.
    """
    patient = _patient(session, ctx, patient_id)
    exists = session.scalar(
        sa.select(Integration.id).where(
            Integration.tenant_id == ctx.tenant_id, Integration.id == data.integration_id
        )
    )
    if exists is None and (data.granted or not _ever_shared(session, patient, data.integration_id)):
        raise InvalidInputError.one(
            "integration_id", "no such integration in this clinic", "unknown"
        )
    row = DataSharingConsent(
        id=new_id("dsc"),
        tenant_id=ctx.tenant_id,
        patient_id=patient.id,
        integration_id=data.integration_id,
        granted=data.granted,
        recorded_by=ctx.actor_id,
        recorded_at=ctx.now,
    )
    session.add(row)
    session.flush()
    action = "patient.data_sharing.grant" if data.granted else "patient.data_sharing.revoke"
    diff = {"integration_id": {"new": data.integration_id}}
    record(session, ctx, action, RESOURCE, patient.id, phi=True, diff=diff)
    return DataSharingOut.model_validate(row)


def data_sharing_allowed(
    session: Session, tenant_id: str, patient_id: str, integration_id: str
) -> bool:
    """Whether the latest decision for this integration is a grant."""
    granted = session.scalar(
        sa.select(DataSharingConsent.granted)
        .where(
            DataSharingConsent.tenant_id == tenant_id,
            DataSharingConsent.patient_id == patient_id,
            DataSharingConsent.integration_id == integration_id,
        )
        .order_by(DataSharingConsent.recorded_at.desc(), DataSharingConsent.id.desc())
        .limit(1)
    )
    return bool(granted)


def _ever_shared(session: Session, patient: Patient, integration_id: str) -> bool:
    stmt = sa.select(DataSharingConsent.id).where(
        DataSharingConsent.patient_id == patient.id,
        DataSharingConsent.integration_id == integration_id,
    )
    return session.scalar(stmt.limit(1)) is not None


def _current_channels(session: Session, patient: Patient) -> dict[str, CommunicationConsent]:
    current: dict[str, CommunicationConsent] = {}
    for row in _channel_history(session, patient):
        current[row.channel] = row  # oldest first: the last one wins
    return current


def _channel_history(session: Session, patient: Patient) -> list[CommunicationConsent]:
    stmt = (
        sa.select(CommunicationConsent)
        .where(CommunicationConsent.patient_id == patient.id)
        # Rows of one request share a time: channel then id keep the order stable.
        .order_by(
            CommunicationConsent.recorded_at,
            CommunicationConsent.channel,
            CommunicationConsent.id,
        )
    )
    return list(session.scalars(stmt))


def _view(session: Session, patient: Patient) -> ConsentsOut:
    history = _channel_history(session, patient)
    channels: dict[str, ConsentOut | None] = dict.fromkeys(CHANNELS)
    for row in history:
        channels[row.channel] = ConsentOut.model_validate(row)
    sharing_rows = session.scalars(
        sa.select(DataSharingConsent)
        .where(DataSharingConsent.patient_id == patient.id)
        .order_by(DataSharingConsent.recorded_at, DataSharingConsent.id)
    )
    sharing = [DataSharingOut.model_validate(row) for row in sharing_rows]
    return ConsentsOut(
        channels=channels,
        channel_history=[ConsentOut.model_validate(row) for row in history],
        data_sharing={row.integration_id: row for row in sharing},
        data_sharing_history=sharing,
    )
