"""Tables owned by the patients package: patients, contacts, identifiers, notes, consents."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.core import models as _core_models  # noqa: F401  (tenants: FK target)
from clinicbridge.db.base import Base, UTCDateTime

CHANNELS = ("sms", "email", "whatsapp", "voice", "push")
IDENTIFIER_SYSTEMS = ("mrn", "pms", "fhir")
SEXES = ("female", "male", "other", "unknown")


def _tenant_fk() -> Any:
    return sa.ForeignKey("tenants.id", ondelete="CASCADE")


class Patient(Base):
    """A clinic's patient. ``first_norm``/``last_norm`` are lower-case and without accents
    (what name search compares); ``name_key`` is a phonetic key for fuzzy search."""

    __tablename__ = "patients"
    __table_args__ = (
        sa.Index("ix_patients_tenant_last_first", "tenant_id", "last_norm", "first_norm"),
        sa.Index("ix_patients_tenant_first", "tenant_id", "first_norm"),
        sa.Index("ix_patients_tenant_dob", "tenant_id", "date_of_birth"),
        sa.Index("ix_patients_tenant_name_key", "tenant_id", "name_key"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    first_name: Mapped[str] = mapped_column(sa.String(100))
    last_name: Mapped[str] = mapped_column(sa.String(100))
    first_norm: Mapped[str] = mapped_column(sa.String(100))
    last_norm: Mapped[str] = mapped_column(sa.String(100))
    name_key: Mapped[str] = mapped_column(sa.String(64))
    date_of_birth: Mapped[date | None] = mapped_column(sa.Date, nullable=True)
    sex: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    preferred_language: Mapped[str | None] = mapped_column(sa.String(35), nullable=True)
    address: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PatientContact(Base):
    """A phone (E.164) or e-mail (lower-cased) of a patient; searchable by exact value."""

    __tablename__ = "patient_contacts"
    __table_args__ = (
        sa.UniqueConstraint("patient_id", "kind", "value"),
        sa.Index("ix_patient_contacts_lookup", "tenant_id", "kind", "value"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(8))  # phone, email
    value: Mapped[str] = mapped_column(sa.String(320))
    label: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    is_primary: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class PatientIdentifier(Base):
    """An id of the patient in another system (MRN, practice-management, FHIR)."""

    __tablename__ = "patient_identifiers"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "system", "value"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(
        sa.ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    system: Mapped[str] = mapped_column(sa.String(16))
    value: Mapped[str] = mapped_column(sa.String(128))


class PatientNote(Base):
    """An authored note. Append-only: database triggers refuse UPDATE and DELETE."""

    __tablename__ = "patient_notes"
    __table_args__ = (sa.Index("ix_patient_notes_patient", "patient_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    author_type: Mapped[str] = mapped_column(sa.String(16))
    author_id: Mapped[str] = mapped_column(sa.String(64))
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CommunicationConsent(Base):
    """One change of a patient's consent to be contacted on a channel. The latest row
    per channel is the current state; the rows together are its history."""

    __tablename__ = "communication_consents"
    __table_args__ = (
        sa.Index("ix_communication_consents_patient", "patient_id", "channel", "recorded_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(sa.String(16))
    granted: Mapped[bool] = mapped_column(sa.Boolean)
    source: Mapped[str] = mapped_column(sa.String(64))  # e.g. intake form, sms STOP, staff
    recorded_by: Mapped[str] = mapped_column(sa.String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DataSharingConsent(Base):
    """One grant or revocation of sharing a patient's data with an integration."""

    __tablename__ = "data_sharing_consents"
    __table_args__ = (
        sa.Index("ix_data_sharing_consents_patient", "patient_id", "integration_id", "recorded_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk())
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    integration_id: Mapped[str] = mapped_column(sa.String(32))  # outlives the integration
    granted: Mapped[bool] = mapped_column(sa.Boolean)
    recorded_by: Mapped[str] = mapped_column(sa.String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
