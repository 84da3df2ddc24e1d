"""Imports every module that registers job handlers or periodic tasks.

The API process and every worker import this, so a job enqueued by one is
understood by all.
"""

from clinicbridge.integrations import alerts
from clinicbridge.messaging import booking_messages, sending
from clinicbridge.scheduling import bookings
from clinicbridge.webhooks import delivery, processing

__all__ = ["alerts", "booking_messages", "bookings", "delivery", "processing", "sending"]
