"""HTTP API: ``/api/v1`` routers, thin: parse, authorize, call a service."""

from __future__ import annotations

from fastapi import APIRouter

from clinicbridge.api import (
    api_keys,
    audit,
    billing,
    bookings,
    calendars,
    connect,
    conversations,
    ical_feeds,
    integration_health,
    integrations,
    invoices,
    jobs,
    memberships,
    message_templates,
    messages,
    patients,
    payments,
    push_subscriptions,
    refunds,
    reminder_rules,
    roles,
    scheduling,
    tasks,
    tax_rates,
    tenant,
    terminal,
    users,
    video_meetings,
    voice,
    webhook_endpoints,
    webhook_events,
)


def api_v1_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    for module in (
        tenant,
        users,
        api_keys,
        roles,
        jobs,
        audit,
        integration_health,  # before integrations: /integrations/health is no id
        integrations,
        webhook_events,
        webhook_endpoints,
        patients,
        scheduling,
        bookings,
        ical_feeds,
        message_templates,
        calendars,
        messages,
        reminder_rules,
        conversations,
        push_subscriptions,
        tasks,
        voice,
        tax_rates,
        invoices,
        billing,
        payments,
        refunds,
        memberships,
        connect,
        terminal,
        video_meetings,
    ):
        router.include_router(module.router)
    return router
