"""Tables owned by the calendars package.

``calendar_accounts``        one OAuth grant per (integration, provider): the practitioner's
                             consent, the scopes granted, and the tokens (vault ciphertexts
                             only, bound to the account id). ``token_version`` grows with
                             every refresh; ``refresh_lease_until`` makes a refresh
                             single-flight across threads and processes (see ``tokens``).
``calendar_oauth_requests``  an authorization started and not yet finished: the ``state``
                             (only its SHA-256), the PKCE verifier (sealed), the clinic and
                             provider it is bound to. Used once, expires after 15 minutes.
``calendar_connections``     one outside calendar of one provider: what to do with it
                             (import busy time, export bookings), the sync cursor and the
                             status the API shows (last sync, lag, errors).

Imported busy time lives in ``busy_blocks`` (scheduling's table, so availability and the
schedule-version triggers see it like any other block), with ``source`` the connection id,
``external_id`` the outside event (instance) and ``connection_id`` for cascade deletes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.integrations import models as _integration_models  # noqa: F401  (FK target)
from clinicbridge.scheduling import models as _scheduling_models  # noqa: F401  (FK target)

ACCOUNT_STATUSES = ("active", "needs_reauth")
CONNECTION_STATUSES = ("active", "error", "needs_reauth", "paused")


def _tenant_fk() -> Any:
    return sa.ForeignKey("tenants.id", ondelete="CASCADE")


class CalendarAccount(Base):
    __tablename__ = "calendar_accounts"
    __table_args__ = (sa.UniqueConstraint("integration_id", "provider_id"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    provider_id: Mapped[str] = mapped_column(
        sa.ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    connector: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    scopes: Mapped[list[str]] = mapped_column(sa.JSON)
    # field -> vault ciphertext ("access_token", "refresh_token"), sealed for this account id
    tokens: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    access_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    token_version: Mapped[int] = mapped_column(sa.Integer, default=1)
    refresh_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    refresh_lease_owner: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    last_refresh_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    authorized_by: Mapped[str] = mapped_column(sa.String(64))
    authorized_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CalendarOAuthRequest(Base):
    __tablename__ = "calendar_oauth_requests"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    provider_id: Mapped[str] = mapped_column(sa.ForeignKey("providers.id", ondelete="CASCADE"))
    state_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    code_verifier: Mapped[str] = mapped_column(sa.Text)  # vault ciphertext
    scopes: Mapped[list[str]] = mapped_column(sa.JSON)
    redirect_uri: Mapped[str] = mapped_column(sa.String(1024))
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CalendarConnection(Base):
    __tablename__ = "calendar_connections"
    __table_args__ = (sa.UniqueConstraint("provider_id", "integration_id", "calendar"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    provider_id: Mapped[str] = mapped_column(
        sa.ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    integration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    account_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("calendar_accounts.id", ondelete="CASCADE"), nullable=True
    )
    connector: Mapped[str] = mapped_column(sa.String(64))
    calendar: Mapped[str] = mapped_column(sa.String(1024))  # a calendar id or CalDAV URL
    import_busy: Mapped[bool] = mapped_column(sa.Boolean)
    export_bookings: Mapped[bool] = mapped_column(sa.Boolean)
    status: Mapped[str] = mapped_column(sa.String(16))
    # The provider's cursor: Google nextSyncToken, Graph deltaLink, CalDAV sync-token;
    # null until the first full sync, and again after the provider expired it (410).
    sync_token: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # CalDAV without sync-collection: the collection's ctag and each resource's etag.
    sync_state: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    has_push: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # Push: the Google channel id or Graph subscription id, Google's resourceId, when it
    # runs out (renewed before), and why the last attempt to start or renew failed.
    push_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True, unique=True)
    push_resource: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    push_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    push_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    push_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Set by whoever asks for a sync (API, poll, push): a request that arrives while a
    # round is running is served by that job running another round, not lost.
    sync_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_full_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_changes: Mapped[int] = mapped_column(sa.Integer, default=0)
    blocks: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CalendarExport(Base):
    """A booking written into a connection's calendar: the outside event it became (a
    Google event id, a Graph event id, a CalDAV resource URL) and the booking version
    last written, so a job run twice writes once and a cancel deletes exactly it."""

    __tablename__ = "calendar_exports"
    __table_args__ = (sa.UniqueConstraint("connection_id", "booking_id"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(_tenant_fk(), index=True)
    connection_id: Mapped[str] = mapped_column(
        sa.ForeignKey("calendar_connections.id", ondelete="CASCADE")
    )
    booking_id: Mapped[str] = mapped_column(
        sa.ForeignKey("bookings.id", ondelete="CASCADE"), index=True
    )
    external_id: Mapped[str] = mapped_column(sa.String(1024))
    version: Mapped[int] = mapped_column(sa.Integer)
    deleted: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
