"""The voice receptionist's tools: what each does, what it needs, what it says.

Every tool takes the call's environment and the arguments the assistant extracted,
and returns an ``Outcome``: a short sentence to read aloud plus structured fields.
Problems the caller can fix are ``ToolError``s whose message says what is needed.

Caller verification before patient data: a tool that discloses or changes a
patient's record needs the caller to have matched a patient earlier in the call
(name + date of birth, or the calling number on file); given a name and date of
birth in its arguments it verifies them first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rapidfuzz import fuzz, process

from clinicbridge.patients.normalize import fold
from clinicbridge.voice import dates
from clinicbridge.voice.backend import (
    BookingInfo,
    PatientInfo,
    PracticeBackend,
    ProviderInfo,
    ServiceInfo,
    SlotInfo,
    SlotTaken,
)
from clinicbridge.voice.models import VoiceCall

SPOKEN_SLOTS = 3  # a caller cannot keep more in mind
LISTED_SLOTS = 10
DEFAULT_SEARCH_DAYS = 7
NEXT_OPENING_DAYS = 30
FIRST_DAYS = 2  # of a longer window, searched first
MAX_WINDOW_DAYS = 31
NOTE_MAX = 2000
SERVICE_SCORE = 70
PROVIDER_SCORE = 75
ANY_PROVIDER = frozenset({"", "any", "anyone", "anybody", "no preference", "first available"})
_CODE = re.compile(r"[^A-Z0-9]")

ASK_IDENTITY = (
    "Before I can help with that, I need to confirm who you are. "
    "Please tell me your first and last name and your date of birth."
)


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


# --- speaking ------------------------------------------------------------------------


def spoken_time(value: datetime, tz: ZoneInfo, *, with_day: bool = True) -> str:
    local = value.astimezone(tz)
    clock = local.strftime("%-I:%M %p").replace(":00 ", " ")
    return f"{local:%A, %B} {local.day} at {clock}" if with_day else clock


def spoken_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def spoken_slots(slots: list[SlotInfo], tz: ZoneInfo) -> str:
    """ "Tuesday, March 10 at 9 AM, 9:30 AM or 10 AM" (times of one day share it)."""
    parts, last_day = [], None
    for slot in slots[:SPOKEN_SLOTS]:
        day = slot.start.astimezone(tz).date()
        parts.append(spoken_time(slot.start, tz, with_day=day != last_day))
        last_day = day
    return spoken_list(parts)


def slot_data(slots: list[SlotInfo], env: ToolEnv, names: dict[str, str]) -> list[dict[str, Any]]:
    tz = env.tz
    return [
        {
            "start": s.start.astimezone(tz).isoformat(),
            "end": s.end.astimezone(tz).isoformat(),
            "provider_id": s.provider_id,
            "provider": names.get(s.provider_id),
        }
        for s in slots[:LISTED_SLOTS]
    ]


def booking_data(booking: BookingInfo, env: ToolEnv) -> dict[str, Any]:
    tz = env.tz
    return {
        "booking_id": booking.id,
        "status": booking.status,
        "start": booking.start.astimezone(tz).isoformat(),
        "end": booking.end.astimezone(tz).isoformat(),
        "confirmation_code": booking.confirmation_code,
        "provider_id": booking.provider_id,
        "service_id": booking.service_id,
    }


# --- what the caller means ---------------------------------------------------------------


def resolve_service(env: ToolEnv, args: Args) -> ServiceInfo:
    services = env.backend.services()
    if not services:
        raise ToolError("no_services", "Sorry, no appointments can be booked by phone right now.")
    wanted = args.text("service", "service_id", "service_name", "appointment_type", "reason")
    if wanted is None:
        if len(services) == 1:
            return services[0]
        raise ToolError(
            "service_required",
            f"What type of appointment would you like? We offer {_names(services)}.",
            services=[{"id": s.id, "name": s.name} for s in services],
        )
    by_id = next((s for s in services if s.id == wanted), None)
    if by_id is not None:
        return by_id
    best = process.extractOne(
        fold(wanted), {s.id: fold(s.name) for s in services}, scorer=fuzz.WRatio
    )
    if best is None or best[1] < SERVICE_SCORE:
        raise ToolError(
            "unknown_service",
            f"I could not find that type of appointment. We offer {_names(services)}.",
            services=[{"id": s.id, "name": s.name} for s in services],
        )
    return next(s for s in services if s.id == best[2])


def _names(services: list[ServiceInfo]) -> str:
    return spoken_list([s.name for s in services[:6]]).replace(" or ", " and ")


def resolve_provider(env: ToolEnv, args: Args, service: ServiceInfo) -> str | None:
    """A provider id, or None for whoever is free."""
    wanted = args.text("provider", "provider_id", "provider_name", "doctor", "practitioner")
    if wanted is None or fold(wanted) in ANY_PROVIDER:
        return None
    providers = env.backend.providers()
    chosen: ProviderInfo | None = next((p for p in providers if p.id == wanted), None)
    if chosen is None:
        plain = re.sub(r"^(dr|doctor|mr|mrs|ms|miss)\.?\s+", "", fold(wanted))
        best = process.extractOne(
            plain, {p.id: fold(p.name) for p in providers}, scorer=fuzz.WRatio
        )
        if best is not None and best[1] >= PROVIDER_SCORE:
            chosen = next(p for p in providers if p.id == best[2])
    eligible = [p for p in providers if p.id in service.provider_ids]
    if chosen is None:
        raise ToolError(
            "unknown_provider",
            f"I could not find that practitioner. For {service.name} you can see "
            f"{spoken_list([p.name for p in eligible]) or 'any of our team'}.",
        )
    if chosen.id not in service.provider_ids:
        raise ToolError(
            "provider_not_eligible",
            f"{chosen.name} does not offer {service.name}. "
            f"You can see {spoken_list([p.name for p in eligible]) or 'another practitioner'}.",
        )
    return chosen.id


def requested_time(env: ToolEnv, args: Args, *names: str) -> datetime:
    spoken = args.text(*names)
    if spoken is None:
        raise ToolError("time_required", "What day and time would you like?")
    when = dates.resolve_when(spoken, env.tz.key, env.now)
    if not when.is_instant:
        raise ToolError(
            "time_required",
            "What time that day would you like? I can check what is open first.",
        )
    if when.start <= env.now:
        raise ToolError("time_in_past", "That time has already passed. When would you like?")
    return when.start


def provider_names(env: ToolEnv) -> dict[str, str]:
    return {p.id: p.name for p in env.backend.providers()}


def open_slots(
    env: ToolEnv, service: ServiceInfo, provider_id: str | None, start: datetime, end: datetime
) -> list[SlotInfo]:
    """The earliest openings in ``[start, end)``: a caller hears the first few, so a long
    window is searched from its first days on, and only further when those are full."""
    start = max(start, env.now)
    end = min(end, start + timedelta(days=MAX_WINDOW_DAYS))
    if end <= start:
        return []
    first = min(end, start + timedelta(days=FIRST_DAYS))
    slots = env.backend.find_slots(
        service_id=service.id, provider_id=provider_id, start=start, end=first, limit=LISTED_SLOTS
    )
    if len(slots) < SPOKEN_SLOTS and first < end:
        slots = env.backend.find_slots(
            service_id=service.id, provider_id=provider_id, start=start, end=end, limit=LISTED_SLOTS
        )
    return slots[:LISTED_SLOTS]


def nearest_slots(
    env: ToolEnv, service: ServiceInfo, provider_id: str | None, after: datetime
) -> list[SlotInfo]:
    """The first openings after ``after``, within the next ``NEXT_OPENING_DAYS``."""
    return open_slots(env, service, provider_id, after, after + timedelta(days=NEXT_OPENING_DAYS))


def verified_patient(env: ToolEnv, args: Args) -> PatientInfo:
    """The caller's patient, verified now from the arguments or earlier in the call."""
    first, last = args.names()
    born = args.birth_date()
    if last and born is not None:
        found = env.backend.match_caller(first_name=first, last_name=last, date_of_birth=born)
        if found is None:
            raise ToolError(
                "verification_failed",
                "I could not match that name and date of birth to a patient. "
                "Could you spell your last name and repeat your date of birth?",
            )
        env.verify(found, "name_dob")
        env.touch(found.id)
        return found
    verified = env.verified_id()
    if verified is not None:
        env.touch(verified)
        return env.backend.get_patient(verified)
    if env.call.caller_number:
        found = env.backend.match_caller(phone=env.call.caller_number)
        if found is not None:
            env.verify(found, "phone")
            env.touch(found.id)
            return found
    raise ToolError("verification_required", ASK_IDENTITY, needs=["name", "date_of_birth"])


def patient_booking(env: ToolEnv, args: Args, patient: PatientInfo) -> BookingInfo:
    raw = args.text("confirmation_code", "code", "booking_code", "booking_id", max_length=40)
    code = None
    booking_id = None
    if raw is not None and raw.startswith("bkg_"):
        booking_id = raw
    elif raw is not None:
        compact = _CODE.sub("", raw.upper())
        code = f"{compact[:3]}-{compact[3:]}" if len(compact) == 6 else raw.upper()
    found = env.backend.patient_bookings(patient.id, confirmation_code=code)
    if booking_id is not None:
        found = [b for b in found if b.id == booking_id]
    if not found:
        raise ToolError(
            "booking_not_found",
            "I could not find an upcoming appointment"
            + (" with that confirmation code." if raw else " for you."),
        )
    if len(found) > 1:
        tz = env.tz
        raise ToolError(
            "booking_ambiguous",
            "You have several upcoming appointments: "
            f"{spoken_list([spoken_time(b.start, tz) for b in found[:3]])}. Which one?",
            bookings=[booking_data(b, env) for b in found[:LISTED_SLOTS]],
        )
    return found[0]


# --- the tools -------------------------------------------------------------------------


def check_availability(env: ToolEnv, args: Args) -> Outcome:
    service = resolve_service(env, args)
    provider_id = resolve_provider(env, args, service)
    spoken = args.text("when", "date", "time", "start", "day", "preferred_time")
    tz = env.tz
    if spoken is None:
        when = dates.When(env.now, env.now + timedelta(days=DEFAULT_SEARCH_DAYS), "week")
    else:
        when = dates.resolve_when(spoken, tz.key, env.now)
    if when.is_instant:
        return _check_instant(env, service, provider_id, when.start)
    if when.end <= env.now:
        raise ToolError("time_in_past", "That time has already passed. When would you like?")
    names = provider_names(env)
    slots = open_slots(env, service, provider_id, when.start, when.end)
    base = {"service_id": service.id, "service": service.name, "provider_id": provider_id}
    if not slots:
        later = nearest_slots(env, service, provider_id, max(when.end, env.now))
        if not later:
            return Outcome(
                f"I am sorry, there is nothing open for {service.name} in the next "
                f"{NEXT_OPENING_DAYS} days.",
                {**base, "available": False, "slots": []},
            )
        return Outcome(
            f"Nothing is open then. The next openings are {spoken_slots(later, tz)}.",
            {**base, "available": False, "slots": slot_data(later, env, names)},
        )
    return Outcome(
        f"I have openings on {spoken_slots(slots, tz)}. Which would you like?",
        {**base, "available": True, "slots": slot_data(slots, env, names)},
    )


def _check_instant(
    env: ToolEnv, service: ServiceInfo, provider_id: str | None, exact: datetime
) -> Outcome:
    """ "Tomorrow at 3pm": that time if open, else the nearest openings after it."""
    tz = env.tz
    if exact <= env.now:
        raise ToolError("time_in_past", "That time has already passed. When would you like?")
    names = provider_names(env)
    base = {"service_id": service.id, "service": service.name, "provider_id": provider_id}
    hit = [
        s
        for s in open_slots(env, service, provider_id, exact, exact + timedelta(minutes=1))
        if s.start == exact
    ]
    if hit:
        who = names.get(hit[0].provider_id, "")
        return Outcome(
            f"Yes, {spoken_time(exact, tz)} is available" + (f" with {who}." if who else "."),
            {**base, "available": True, "slots": slot_data(hit, env, names)},
        )
    later = nearest_slots(env, service, provider_id, exact)
    text = f"I am sorry, {spoken_time(exact, tz)} is not available."
    if later:
        text += f" The nearest openings are {spoken_slots(later, tz)}. Would one of those work?"
    return Outcome(text, {**base, "available": False, "slots": slot_data(later, env, names)})


def _booking_patient(env: ToolEnv, args: Args) -> PatientInfo:
    first, last = args.names()
    born = args.birth_date()
    if first and last and born is not None:
        patient, created = env.backend.find_or_create_patient(
            first_name=first,
            last_name=last,
            date_of_birth=born,
            phone=args.text("phone", "phone_number", max_length=40) or _caller_phone(env),
            email=args.text("email", max_length=320),
        )
        env.touch(patient.id, existing=not created)
        return patient
    verified = env.verified_id()
    if verified is not None:
        env.touch(verified)
        return env.backend.get_patient(verified)
    raise ToolError(
        "patient_details_required",
        "To book, I need your first and last name and your date of birth.",
        needs=["first_name", "last_name", "date_of_birth"],
    )


def _caller_phone(env: ToolEnv) -> str | None:
    return env.call.caller_number


def book_appointment(env: ToolEnv, args: Args) -> Outcome:
    service = resolve_service(env, args)
    provider_id = resolve_provider(env, args, service)
    start = requested_time(env, args, "start", "when", "time", "date", "slot")
    tz = env.tz
    names = provider_names(env)
    free = [
        s
        for s in open_slots(env, service, provider_id, start, start + timedelta(minutes=1))
        if s.start == start
    ]
    if not free:
        return _slot_gone(env, service, provider_id, start, names, "slot_unavailable")
    patient = _booking_patient(env, args)
    try:
        booking = env.backend.book(
            service_id=service.id,
            provider_id=free[0].provider_id,
            start=start,
            patient_id=patient.id,
        )
    except SlotTaken as exc:
        return _slot_gone(env, service, provider_id, start, names, "slot_taken", exc.next_slots)
    who = names.get(booking.provider_id)
    return Outcome(
        f"You are booked for {service.name} on {spoken_time(booking.start, tz)}"
        + (f" with {who}" if who else "")
        + f". Your confirmation code is {booking.confirmation_code}.",
        {**booking_data(booking, env), "service": service.name, "provider": who},
    )


def _slot_gone(
    env: ToolEnv,
    service: ServiceInfo,
    provider_id: str | None,
    start: datetime,
    names: dict[str, str],
    code: str,
    suggested: list[SlotInfo] | None = None,
) -> Outcome:
    tz = env.tz
    slots = suggested or nearest_slots(env, service, provider_id, start)
    text = f"I am sorry, {spoken_time(start, tz)} is not available."
    if slots:
        text += f" The nearest openings are {spoken_slots(slots, tz)}."
    return Outcome(text, {"available": False, "slots": slot_data(slots, env, names)}, False, code)


def reschedule_appointment(env: ToolEnv, args: Args) -> Outcome:
    patient = verified_patient(env, args)
    booking = patient_booking(env, args, patient)
    start = requested_time(env, args, "new_start", "new_time", "start", "when", "time", "date")
    tz = env.tz
    try:
        moved = env.backend.reschedule(booking.id, start)
    except SlotTaken as exc:
        names = provider_names(env)
        services = {s.id: s for s in env.backend.services()}
        service = services.get(booking.service_id)
        if service is None:
            raise ToolError("slot_taken", "I am sorry, that time is not available.") from None
        return _slot_gone(
            env, service, booking.provider_id, start, names, "slot_taken", exc.next_slots
        )
    return Outcome(
        f"Done. Your appointment is moved to {spoken_time(moved.start, tz)}. "
        f"Your confirmation code is {moved.confirmation_code}.",
        booking_data(moved, env),
    )


def cancel_appointment(env: ToolEnv, args: Args) -> Outcome:
    patient = verified_patient(env, args)
    booking = patient_booking(env, args, patient)
    reason = args.text("reason", "cancel_reason", max_length=500) or "Cancelled by phone"
    cancelled = env.backend.cancel(booking.id, reason)
    return Outcome(
        f"Your appointment on {spoken_time(cancelled.start, env.tz)} is cancelled.",
        booking_data(cancelled, env),
    )


def search_patients(env: ToolEnv, args: Args) -> Outcome:
    first, last = args.names()
    born = args.birth_date()
    if not last or born is None:
        if env.verified_id() is None and env.call.caller_number:
            return _found(env, verified_patient(env, Args({})))
        raise ToolError(
            "patient_details_required",
            "To find your record I need your first and last name and your date of birth.",
            needs=["first_name", "last_name", "date_of_birth"],
        )
    found = env.backend.match_caller(first_name=first, last_name=last, date_of_birth=born)
    if found is None:
        return Outcome(
            "I could not find a patient with that name and date of birth. Could you spell "
            "your last name and repeat your date of birth, or would you like to register?",
            {"found": False},
        )
    env.verify(found, "name_dob")
    env.touch(found.id)
    return _found(env, found)


def _found(env: ToolEnv, patient: PatientInfo) -> Outcome:
    return Outcome(
        f"Thank you, {patient.first_name}. I found your record.",
        {"found": True, "patient_id": patient.id, "first_name": patient.first_name},
    )


def get_patient(env: ToolEnv, args: Args) -> Outcome:
    verified = verified_patient(env, args)
    patient = env.backend.get_patient(verified.id)  # the audited PHI read
    upcoming = env.backend.patient_bookings(patient.id)
    tz = env.tz
    text = f"I have your record, {patient.first_name} {patient.last_name}."
    if upcoming:
        text += f" Your next appointment is on {spoken_time(upcoming[0].start, tz)}."
    else:
        text += " You have no upcoming appointments."
    return Outcome(
        text,
        {
            "patient_id": patient.id,
            "first_name": patient.first_name,
            "last_name": patient.last_name,
            "date_of_birth": patient.date_of_birth.isoformat() if patient.date_of_birth else None,
            "upcoming": [booking_data(b, env) for b in upcoming[:LISTED_SLOTS]],
        },
    )


def create_patient(env: ToolEnv, args: Args) -> Outcome:
    first, last = args.names()
    born = args.birth_date()
    if not (first and last and born is not None):
        raise ToolError(
            "patient_details_required",
            "To register you I need your first and last name and your date of birth.",
            needs=["first_name", "last_name", "date_of_birth"],
        )
    patient, created = env.backend.find_or_create_patient(
        first_name=first,
        last_name=last,
        date_of_birth=born,
        phone=args.text("phone", "phone_number", max_length=40) or _caller_phone(env),
        email=args.text("email", max_length=320),
    )
    env.touch(patient.id, existing=not created)
    if created:
        env.verify(patient, "created")
        text = f"Thank you, {patient.first_name}. You are now registered with the clinic."
    else:
        # Only a caller who passes the strict identity check is treated as this patient.
        strict = env.backend.match_caller(first_name=first, last_name=last, date_of_birth=born)
        if strict is not None and strict.id == patient.id:
            env.verify(strict, "name_dob")
        text = f"Thank you, {patient.first_name}. You are already registered with us."
    return Outcome(text, {"patient_id": patient.id, "created": created})


def add_patient_note(env: ToolEnv, args: Args) -> Outcome:
    note = args.text("note", "text", "message", "body", "content", max_length=NOTE_MAX + 1)
    if note is None:
        raise ToolError("note_required", "What would you like me to pass on to the clinic?")
    if len(note) > NOTE_MAX:
        raise ToolError("note_too_long", "That message is too long. Could you keep it shorter?")
    patient = verified_patient(env, args)
    note_id = env.backend.add_note(patient.id, note)
    return Outcome(
        "Thank you. I have added that to your record for the clinic team.",
        {"note_id": note_id, "patient_id": patient.id},
    )


def _not_available(what: str) -> Callable[[ToolEnv, Args], Outcome]:
    def tool(env: ToolEnv, args: Args) -> Outcome:
        return Outcome(
            f"I am sorry, {what} is not available for this clinic by phone yet. "
            "A member of the clinic team can help you with that.",
            {"available": False},
            False,
            "not_available",
        )

    return tool


# --- the catalogue (also what ``clinicbridge voice assistant-config`` prints) ---------------

ToolFn = Callable[[ToolEnv, Args], Outcome]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    run: ToolFn


def _schema(props: dict[str, str], *required: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": d} for name, d in props.items()},
        "required": list(required),
    }


_IDENTITY = {
    "first_name": "The patient's first name.",
    "last_name": "The patient's last name.",
    "date_of_birth": "Date of birth, e.g. 1980-03-05 or 'March 5th 1980'.",
}
_SERVICE = "Type of appointment, by name as the caller says it (e.g. 'check-up')."
_PROVIDER = "Preferred practitioner's name, or 'any'."
_CODE_ARG = "The appointment's confirmation code, e.g. K7Q-4MX, if the caller has it."

TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "checkAvailability",
            "Find open appointment times. Dates can be natural: 'next Tuesday morning', "
            "'tomorrow at 3pm'.",
            _schema(
                {
                    "service": _SERVICE,
                    "provider": _PROVIDER,
                    "when": "When the caller would like to come, in their words.",
                }
            ),
            check_availability,
        ),
        ToolSpec(
            "bookAppointment",
            "Book an appointment at an open time for the caller.",
            _schema(
                {
                    "service": _SERVICE,
                    "provider": _PROVIDER,
                    "start": "The chosen time: a slot's start from checkAvailability, or words.",
                    **_IDENTITY,
                    "phone": "A phone number to reach the patient (any format).",
                    "email": "An e-mail address for the confirmation.",
                },
                "start",
            ),
            book_appointment,
        ),
        ToolSpec(
            "rescheduleAppointment",
            "Move the caller's upcoming appointment to a new time (verifies the caller).",
            _schema(
                {"confirmation_code": _CODE_ARG, "new_start": "The new time.", **_IDENTITY},
                "new_start",
            ),
            reschedule_appointment,
        ),
        ToolSpec(
            "cancelAppointment",
            "Cancel the caller's upcoming appointment (verifies the caller).",
            _schema(
                {"confirmation_code": _CODE_ARG, "reason": "Why, in a few words.", **_IDENTITY}
            ),
            cancel_appointment,
        ),
        ToolSpec(
            "searchPatients",
            "Find and verify the caller's patient record by name and date of birth.",
            _schema(_IDENTITY, "last_name", "date_of_birth"),
            search_patients,
        ),
        ToolSpec(
            "getPatient",
            "Read the verified caller's record and next appointment.",
            _schema(_IDENTITY),
            get_patient,
        ),
        ToolSpec(
            "createPatient",
            "Register a new patient (or find the existing record).",
            _schema(
                {
                    **_IDENTITY,
                    "phone": "The patient's phone number (any format).",
                    "email": "The patient's e-mail address.",
                },
                "first_name",
                "last_name",
                "date_of_birth",
            ),
            create_patient,
        ),
        ToolSpec(
            "addPatientNote",
            "Pass a message from the verified caller to the clinic team.",
            _schema({"note": "The message, in the caller's words.", **_IDENTITY}, "note"),
            add_patient_note,
        ),
        ToolSpec(
            "getPatientBalance",
            "The caller's account balance (not available yet).",
            _schema(_IDENTITY),
            _not_available("checking your balance"),
        ),
        ToolSpec(
            "getPatientInsurance",
            "The caller's insurance on file (not available yet).",
            _schema(_IDENTITY),
            _not_available("insurance information"),
        ),
        ToolSpec(
            "processPayment",
            "Take a payment (not available yet).",
            _schema({"amount": "The amount.", **_IDENTITY}),
            _not_available("taking payments"),
        ),
    )
}
