"""Imports every module that registers job handlers or periodic tasks.

The API process and every worker import this, so a job enqueued by one is
understood by all.
"""

from clinicbridge.integrations import alerts
from clinicbridge.messaging import (
    booking_messages,
    email_events,
    reminder_sending,
    reminders,
    sending,
    twilio_events,
)
from clinicbridge.payments import receipts, reconcile, stripe_events
from clinicbridge.scheduling import bookings
from clinicbridge.webhooks import delivery, processing

__all__ = [
    "alerts",
    "booking_messages",
    "bookings",
    "delivery",
    "email_events",
    "processing",
    "receipts",
    "reconcile",
    "reminder_sending",
    "reminders",
    "sending",
    "stripe_events",
    "twilio_events",
]
