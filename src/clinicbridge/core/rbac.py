"""Role-based access control: permissions are ``resource:action`` strings.

Built-in roles are fixed sets defined here; clinics add custom roles (stored in
``roles``). A principal may only hand out a role whose permissions it holds
itself, so nobody can mint a key more powerful than their own.
"""

from __future__ import annotations

import re

PERMISSIONS: dict[str, str] = {
    "tenant:read": "See the clinic's profile",
    "tenant:write": "Change the clinic's profile and ownership",
    "users:read": "List staff accounts",
    "users:write": "Create, change and remove staff accounts",
    "api_keys:read": "List API keys",
    "api_keys:write": "Create and revoke API keys",
    "roles:read": "List roles",
    "roles:write": "Create, change and delete custom roles",
    "patients:read": "Read patient records",
    "patients:write": "Create and change patient records",
    "patients:notes": "Write notes on patient records",
    "schedule:read": "See providers, services and availability",
    "schedule:write": "Configure providers, services and hours",
    "bookings:read": "See bookings",
    "bookings:write": "Create, change and cancel bookings",
    "messages:read": "See messages and conversations",
    "messages:send": "Send messages to patients",
    "tasks:read": "See staff tasks",
    "tasks:write": "Resolve staff tasks",
    "billing:read": "See invoices, payments and balances",
    "billing:write": "Create invoices and take payments",
    "billing:refund": "Issue refunds",
    "billing:terminal": "Take card payments at the front desk (Stripe Terminal)",
    "integrations:read": "See integrations and their health",
    "integrations:manage": "Connect, configure and remove integrations",
    "webhooks:read": "See inbound and outbound webhooks",
    "webhooks:manage": "Replay webhooks and manage webhook endpoints",
    "jobs:read": "See background jobs",
    "jobs:manage": "Retry and cancel background jobs",
    "audit:read": "Read the audit log",
    "voice:read": "See the voice receptionist's tool-call log",
}

_ALL = frozenset(PERMISSIONS)
_CLINICAL = frozenset(
    {
        "tenant:read",
        "patients:read",
        "patients:write",
        "patients:notes",
        "schedule:read",
        "bookings:read",
        "bookings:write",
        "messages:read",
        "messages:send",
        "tasks:read",
        "tasks:write",
    }
)

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "owner": _ALL,
    "admin": _ALL - {"tenant:write"},
    "clinician": _CLINICAL,
    "front_desk": _CLINICAL - {"patients:notes"} | {"billing:read", "billing:terminal"},
    "billing": frozenset(
        {
            "tenant:read",
            "patients:read",
            "bookings:read",
            "billing:read",
            "billing:write",
            "billing:refund",
            "billing:terminal",
        }
    ),
    "auditor": frozenset(p for p in _ALL if p.endswith(":read") and not p.startswith("patients:")),
    "integration": frozenset(
        {
            "tenant:read",
            "patients:read",
            "patients:write",
            "schedule:read",
            "bookings:read",
            "bookings:write",
            "messages:send",
            "billing:read",
            "billing:write",
            "integrations:read",
            "webhooks:read",
        }
    ),
}

BUILTIN_DESCRIPTIONS: dict[str, str] = {
    "owner": "Everything, including the clinic's profile and other owners",
    "admin": "Everything except the clinic's profile and ownership",
    "clinician": "Patients, notes, bookings and messages",
    "front_desk": "Patients, bookings, messages and balances",
    "billing": "Invoices, payments, refunds and balances",
    "auditor": "Read-only access to the audit log and configuration",
    "integration": "Machine role for other systems' API keys",
}

ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


def unknown_permissions(permissions: list[str]) -> list[str]:
    return [p for p in permissions if p not in PERMISSIONS]


def can_grant(holder: frozenset[str], role_permissions: frozenset[str]) -> bool:
    """A principal can hand out a role only if it holds every permission in it."""
    return role_permissions <= holder
