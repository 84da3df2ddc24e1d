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

from collections.abc import Iterator
from datetime import datetime, timedelta

from clinicbridge.voice import dates
from clinicbridge.voice.backend import (
    CalendarRefused,
    PatientInfo,
    ServiceInfo,
    SlotInfo,
    SlotTaken,
)
from clinicbridge.voice.speech import (
    LISTED_SLOTS,
    booking_data,
    slot_data,
    spoken_slots,
    spoken_time,
)
from clinicbridge.voice.toolkit import Args, Outcome, ToolEnv, ToolError, ToolFn
from clinicbridge.voice.understanding import (
    NEXT_OPENING_DAYS,
    booking_patient,
    nearest_slots,
    open_slots,
    patient_booking,
    provider_names,
    requested_time,
    resolve_provider,
    resolve_service,
    verified_patient,
)

DEFAULT_SEARCH_DAYS = 7
NOTE_MAX = 2000


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
    patient = booking_patient(env, args)
    booking = None
    for slot in _candidates(env, service, provider_id, start, free[0]):
        try:
            booking = env.backend.book(
                service_id=service.id,
                provider_id=slot.provider_id,
                start=start,
                patient_id=patient.id,
            )
        except CalendarRefused:
            continue  # that provider's own calendar has the time busy: the next one
        except SlotTaken as exc:
            return _slot_gone(env, service, provider_id, start, names, "slot_taken", exc.next_slots)
        break
    if booking is None:
        return _slot_gone(env, service, provider_id, start, names, "slot_taken")
    who = names.get(booking.provider_id)
    return Outcome(
        f"You are booked for {service.name} on {spoken_time(booking.start, tz)}"
        + (f" with {who}" if who else "")
        + f". Your confirmation code is {booking.confirmation_code}.",
        {**booking_data(booking, env), "service": service.name, "provider": who},
    )


def _candidates(
    env: ToolEnv, service: ServiceInfo, provider_id: str | None, start: datetime, first: SlotInfo
) -> Iterator[SlotInfo]:
    """The slot the engine offers, then, when any provider will do and that one's own
    calendar refuses the time, the other providers free then (looked up only if needed)."""
    yield first
    if provider_id is not None:
        return
    for other in service.provider_ids:
        if other == first.provider_id:
            continue
        for slot in open_slots(env, service, other, start, start + timedelta(minutes=1)):
            if slot.start == start:
                yield slot


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
    # never the time refused (an outside calendar's busy time is not imported yet)
    slots = [s for s in suggested or nearest_slots(env, service, provider_id, start)
             if s.start != start]  # fmt: skip
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
        phone=args.text("phone", "phone_number", max_length=40) or env.call.caller_number,
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


def not_available(what: str) -> ToolFn:
    def tool(env: ToolEnv, args: Args) -> Outcome:
        return Outcome(
            f"I am sorry, {what} is not available for this clinic by phone yet. "
            "A member of the clinic team can help you with that.",
            {"available": False},
            False,
            "not_available",
        )

    return tool
