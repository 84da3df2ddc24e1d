"""Imports every module that registers job handlers or periodic tasks.

The API process and every worker import this, so a job enqueued by one is
understood by all.
"""

from clinicbridge.calendars import backfill as calendar_backfill
from clinicbridge.calendars import export as calendar_export
from clinicbridge.calendars import freshcheck as calendar_freshcheck
from clinicbridge.calendars import jobs as calendar_jobs
from clinicbridge.calendars import sync as calendar_sync
from clinicbridge.integrations import alerts
from clinicbridge.messaging import (
    booking_messages,
    email_events,
    reminder_sending,
    reminders,
    sending,
    twilio_events,
    video_links,
)
from clinicbridge.payments import (
    connect,
    memberships_events,
    receipts,
    reconcile,
    stripe_events,
    terminal,
    transfers,
)
from clinicbridge.payments import links as payment_links
from clinicbridge.scheduling import bookings
from clinicbridge.video import meetings as video_meetings
from clinicbridge.webhooks import delivery, processing

__all__ = [
    "alerts",
    "booking_messages",
    "bookings",
    "calendar_backfill",
    "calendar_export",
    "calendar_freshcheck",
    "calendar_jobs",
    "calendar_sync",
    "connect",
    "delivery",
    "email_events",
    "memberships_events",
    "payment_links",
    "processing",
    "receipts",
    "reconcile",
    "reminder_sending",
    "reminders",
    "sending",
    "stripe_events",
    "terminal",
    "transfers",
    "twilio_events",
    "video_links",
    "video_meetings",
]
