"""What the caller means: the service, practitioner and time they ask for, the
openings that fit, and which patient and booking they are (verifying the caller)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from rapidfuzz import fuzz, process

from clinicbridge.patients.normalize import fold
from clinicbridge.voice import dates
from clinicbridge.voice.backend import BookingInfo, PatientInfo, ProviderInfo, ServiceInfo, SlotInfo
from clinicbridge.voice.speech import (
    LISTED_SLOTS,
    SPOKEN_SLOTS,
    booking_data,
    spoken_list,
    spoken_time,
)
from clinicbridge.voice.toolkit import Args, ToolEnv, ToolError

NEXT_OPENING_DAYS = 30
FIRST_DAYS = 2  # of a longer window, searched first
MAX_WINDOW_DAYS = 31
SERVICE_SCORE = 70
PROVIDER_SCORE = 75
ANY_PROVIDER = frozenset({"", "any", "anyone", "anybody", "no preference", "first available"})
_CODE = re.compile(r"[^A-Z0-9]")

ASK_IDENTITY = (
    "Before I can help with that, I need to confirm who you are. "
    "Please tell me your first and last name and your date of birth."
)


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


def booking_patient(env: ToolEnv, args: Args) -> PatientInfo:
    """The patient to book for: found or registered from the arguments, else the
    caller verified earlier in the call."""
    first, last = args.names()
    born = args.birth_date()
    if first and last and born is not None:
        patient, created = env.backend.find_or_create_patient(
            first_name=first,
            last_name=last,
            date_of_birth=born,
            phone=args.text("phone", "phone_number", max_length=40) or env.call.caller_number,
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
