"""Google Calendar (API v3): per-practitioner OAuth with PKCE, events and free/busy."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import HttpUrl

from clinicbridge.integrations.connector import Cred, Credentials, HttpSettings
from clinicbridge.integrations.connectors.oauth_calendar import (
    BusyCheckSettings,
    OAuthCalendarConnector,
)
from clinicbridge.webhooks.verifiers import google_calendar


class GoogleCalendarCredentials(Credentials):
    client_id: Cred
    client_secret: Cred
    # Generated: the token of push channels (Google) / clientState of subscriptions (Graph).
    webhook_secret: Cred | None = None


class GoogleCalendarSettings(HttpSettings, BusyCheckSettings):
    api_base: HttpUrl = HttpUrl("https://www.googleapis.com")
    authorize_url: HttpUrl = HttpUrl("https://accounts.google.com/o/oauth2/v2/auth")
    token_url: HttpUrl = HttpUrl("https://oauth2.googleapis.com/token")


class GoogleCalendar(OAuthCalendarConnector):
    key = "google_calendar"
    display_name = "Google Calendar"
    credentials_schema = GoogleCalendarCredentials
    settings_schema = GoogleCalendarSettings
    verifier = staticmethod(google_calendar.verify)
    webhook_secret_field = "webhook_secret"
    generates_webhook_secret = True
    # Events only (no calendar list, no settings, no other Google data).
    read_scopes: ClassVar[tuple[str, ...]] = (
        "https://www.googleapis.com/auth/calendar.events.readonly",
    )
    write_scopes: ClassVar[tuple[str, ...]] = ("https://www.googleapis.com/auth/calendar.events",)
    # offline: a refresh token; consent: Google sends one again on a re-authorization.
    authorize_params: ClassVar[dict[str, str]] = {"access_type": "offline", "prompt": "consent"}

    def authorize_endpoint(self, settings: dict[str, Any]) -> str:
        return str(settings["authorize_url"])

    def token_endpoint(self, settings: dict[str, Any]) -> str:
        return str(settings["token_url"])
