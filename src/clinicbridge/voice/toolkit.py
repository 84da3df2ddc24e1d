"""What every voice tool works with: the call's environment, the arguments the
assistant extracted, the ``Outcome`` a tool returns and the ``ToolError`` it raises."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from clinicbridge.voice import dates
from clinicbridge.voice.backend import PatientInfo, PracticeBackend
from clinicbridge.voice.models import VoiceCall


class ToolError(Exception):
    """Something the caller can fix or should hear; ``message`` is read aloud."""

    def __init__(self, code: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


@dataclass(frozen=True)
class Outcome:
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    success: bool = True
    error_code: str | None = None


@dataclass
class ToolEnv:
    """One tool call's world: the practice, the call (its verification), the time."""

    backend: PracticeBackend
    call: VoiceCall
    now: datetime
    patient_id: str | None = None  # the patient this tool call concerned
    phi: bool = False  # whether it read or changed an existing patient's record
    verified: tuple[str, str] | None = None  # (patient id, how) matched in this tool call

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.backend.timezone())

    def touch(self, patient_id: str, *, existing: bool = True) -> None:
        self.patient_id = patient_id
        self.phi = self.phi or existing

    def verify(self, patient: PatientInfo, via: str) -> None:
        """The caller is this patient from now on in the call. Applied by the runner
        after the tool, so that it holds even when the tool's own action fails."""
        self.verified = (patient.id, via)

    def verified_id(self) -> str | None:
        return self.verified[0] if self.verified else self.call.verified_patient_id


# --- arguments ---------------------------------------------------------------------


class Args:
    """The tool call's arguments, read leniently (the model names things loosely)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = {_key(k): v for k, v in raw.items()}

    def text(self, *names: str, max_length: int = 200) -> str | None:
        for name in names:
            value = self.raw.get(_key(name))
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if isinstance(value, str) and value.strip():
                return " ".join(value.split())[:max_length]
        return None

    def birth_date(self) -> date | None:
        spoken = self.text("date_of_birth", "dob", "birth_date", "birthdate", "birthday")
        if spoken is None:
            return None
        born = dates.resolve_date(spoken, field="date of birth")
        if born > date.today():
            raise ToolError("invalid_date_of_birth", "The date of birth cannot be in the future.")
        return born

    def names(self) -> tuple[str | None, str | None]:
        first = self.text("first_name", "firstname", "given_name", max_length=100)
        last = self.text("last_name", "lastname", "family_name", "surname", max_length=100)
        full = self.text("name", "full_name", "patient_name", max_length=200)
        if full and not (first and last):
            parts = full.split()
            if len(parts) >= 2:
                first, last = first or " ".join(parts[:-1]), last or parts[-1]
            else:
                last = last or full
        return first, last


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


ToolFn = Callable[[ToolEnv, Args], Outcome]
