"""Message kinds, the channels they go out on, and the variables each kind provides.

A kind's variables are namespaces of plain strings (``booking.start_text``), handed to
templates as dicts of strings: no objects, nothing to reach through. ``custom`` messages
provide whatever the caller declares (``["promo.code", "clinic.name", "note"]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from clinicbridge.core.errors import InvalidInputError

Channel = Literal["sms", "email", "whatsapp", "push"]
CHANNELS: tuple[Channel, ...] = ("sms", "email", "whatsapp", "push")

# namespace -> its fields; None means a plain top-level string variable.
VariableSpec = Mapping[str, frozenset[str] | None]

_CLINIC = frozenset({"name", "phone"})
_PATIENT = frozenset({"first_name"})
_BOOKING = frozenset(
    {
        "start_text",  # date and time, in the clinic's zone and the patient's language
        "date_text",
        "time_text",
        "service",
        "provider",
        "location",
        "confirmation_code",
        "video_url",  # "" when the visit is not a video visit
    }
)
_LINKS = frozenset({"confirm_url", "cancel_url"})

_BOOKING_VARS: VariableSpec = {
    "clinic": _CLINIC,
    "patient": _PATIENT,
    "booking": _BOOKING,
    "links": _LINKS,
}

KIND_VARIABLES: dict[str, VariableSpec] = {
    "booking.confirmation": _BOOKING_VARS,
    "booking.reminder": _BOOKING_VARS,
    "booking.cancelled": _BOOKING_VARS,
    "booking.rescheduled": {
        **_BOOKING_VARS,
        "booking": _BOOKING | {"previous_start_text"},
    },
    "booking.video_link": _BOOKING_VARS,  # the link, when it came after the confirmation
    "payment.receipt": {
        "clinic": _CLINIC,
        "patient": _PATIENT,
        "payment": frozenset({"amount_text", "currency", "receipt_url"}),
    },
    "payment.link": {
        "clinic": _CLINIC,
        "patient": _PATIENT,
        "payment": frozenset({"amount_text", "currency", "pay_url"}),
    },
}
CUSTOM = "custom"
KINDS: tuple[str, ...] = (*KIND_VARIABLES, CUSTOM)

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _valid_name(name: str) -> bool:
    return bool(name) and name[0].isalpha() and set(name) <= _NAME_CHARS


def declared_spec(variables: Iterable[str]) -> VariableSpec:
    """Turn ``["clinic.name", "promo_code"]`` into a spec; names are lower snake case."""
    namespaces: dict[str, set[str]] = {}
    plain: set[str] = set()
    for raw in variables:
        parts = raw.split(".")
        if len(parts) > 2 or not all(_valid_name(p) for p in parts):
            raise InvalidInputError.one(
                "variables",
                f"'{raw}' is not a valid variable name "
                "(lower-case letters, digits and '_', at most one '.').",
            )
        if len(parts) == 1:
            plain.add(parts[0])
        else:
            namespaces.setdefault(parts[0], set()).add(parts[1])
    clash = plain & namespaces.keys()
    if clash:
        name = sorted(clash)[0]
        raise InvalidInputError.one(
            "variables", f"'{name}' is declared both as a variable and as a namespace."
        )
    spec: dict[str, frozenset[str] | None] = {n: frozenset(f) for n, f in namespaces.items()}
    spec.update(dict.fromkeys(plain))
    return spec


def variables_for(kind: str, declared: Iterable[str] | None = None) -> VariableSpec:
    """The variables ``kind`` provides; for ``custom``, those the caller declares."""
    if kind == CUSTOM:
        return declared_spec(declared or ())
    if kind not in KIND_VARIABLES:
        raise InvalidInputError.one(
            "kind", f"Unknown message kind '{kind}'; expected one of: {', '.join(KINDS)}."
        )
    if declared:
        raise InvalidInputError.one(
            "variables", f"Only 'custom' messages declare variables; '{kind}' has its own."
        )
    return KIND_VARIABLES[kind]
