"""One module per provider; ``ALL`` is what the registry installs."""

from __future__ import annotations

from clinicbridge.integrations.connector import Connector
from clinicbridge.integrations.connectors.caldav import CalDav
from clinicbridge.integrations.connectors.daily import Daily
from clinicbridge.integrations.connectors.docusign import DocuSign
from clinicbridge.integrations.connectors.generic import GenericHmac, StandardWebhooks
from clinicbridge.integrations.connectors.google_calendar import GoogleCalendar
from clinicbridge.integrations.connectors.mailgun import Mailgun
from clinicbridge.integrations.connectors.microsoft_calendar import MicrosoftCalendar
from clinicbridge.integrations.connectors.resend import Resend
from clinicbridge.integrations.connectors.sendgrid import SendGrid
from clinicbridge.integrations.connectors.smtp import Smtp
from clinicbridge.integrations.connectors.stripe import Stripe
from clinicbridge.integrations.connectors.twilio import Twilio
from clinicbridge.integrations.connectors.vapi import Vapi
from clinicbridge.integrations.connectors.web_push import WebPush
from clinicbridge.integrations.connectors.zoom import Zoom

ALL: tuple[type[Connector], ...] = (
    Stripe,
    Twilio,
    SendGrid,
    Resend,
    Mailgun,
    Smtp,
    WebPush,
    DocuSign,
    Zoom,
    Vapi,
    GenericHmac,
    StandardWebhooks,
    GoogleCalendar,
    MicrosoftCalendar,
    CalDav,
    Daily,
)
