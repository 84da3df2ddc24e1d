"""The tool catalogue: each tool's name, description and JSON schema for the assistant
(what ``clinicbridge voice assistant-config`` prints), and the function that runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clinicbridge.voice.payment_tools import get_patient_balance, process_payment
from clinicbridge.voice.toolkit import ToolFn
from clinicbridge.voice.tools import (
    add_patient_note,
    book_appointment,
    cancel_appointment,
    check_availability,
    create_patient,
    get_patient,
    not_available,
    reschedule_appointment,
    search_patients,
)


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
            "The verified caller's account balance with the clinic (verifies the caller).",
            _schema(_IDENTITY),
            get_patient_balance,
        ),
        ToolSpec(
            "getPatientInsurance",
            "The caller's insurance on file (not available yet).",
            _schema(_IDENTITY),
            not_available("insurance information"),
        ),
        ToolSpec(
            "processPayment",
            "Send the verified caller a secure payment link by text message or e-mail, for "
            "their open balance, an invoice or a booking awaiting payment. Never ask for "
            "card numbers: the caller pays on the linked page.",
            _schema(
                {
                    "channel": "How to send the link: 'sms' or 'email' (default: sms if possible).",
                    "invoice_number": "The invoice the caller names, if any (e.g. INV-2026-0001).",
                    "confirmation_code": _CODE_ARG,
                    **_IDENTITY,
                }
            ),
            process_payment,
        ),
    )
}
