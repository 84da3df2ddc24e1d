"""API shapes of calendar accounts (OAuth) and calendar connections."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

IntegrationId = Annotated[str, Field(min_length=4, max_length=32, pattern=r"^[a-z]{2,5}_\w+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AuthorizationStart(Strict):
    integration_id: IntegrationId
    # Write access (to export bookings into the calendar); read-only otherwise.
    export_bookings: bool = True


class AuthorizationStarted(BaseModel):
    authorization_url: str
    redirect_uri: str
    scopes: list[str]
    expires_at: datetime


class CalendarAccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    provider_id: str
    integration_id: str
    connector: str
    status: str
    scopes: list[str]
    access_expires_at: datetime
    last_refresh_at: datetime | None
    last_error: str | None
    authorized_at: datetime
    authorized_by: str


class ConnectionCreate(Strict):
    integration_id: IntegrationId
    # A Google calendar id ("primary", "...@group.calendar.google.com"), a Graph calendar
    # id ("primary": the default calendar), or a CalDAV calendar collection URL.
    calendar: Annotated[str, Field(min_length=1, max_length=1024)]
    import_busy: bool = True
    export_bookings: bool = True


class ConnectionUpdate(Strict):
    # Each switch is optional (absent or null: unchanged), but at least one must be given,
    # and a connection must still import or export afterwards (``update_connection``).
    import_busy: bool | None = None
    export_bookings: bool | None = None


class SyncStatus(BaseModel):
    last_sync_at: datetime | None
    last_success_at: datetime | None
    last_full_sync_at: datetime | None
    lag_seconds: float | None  # now - last successful sync; None before the first
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    last_changes: int
    blocks: int
    push: bool  # False: polled every 5 minutes


class ConnectionOut(BaseModel):
    id: str
    provider_id: str
    integration_id: str
    account_id: str | None
    connector: str
    calendar: str
    import_busy: bool
    export_bookings: bool
    status: str
    sync: SyncStatus
    created_at: datetime
    updated_at: datetime


class SyncStarted(BaseModel):
    job_id: str
    connection_id: str
    created: bool  # False: a sync of this connection was already waiting or running
