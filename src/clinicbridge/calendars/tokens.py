"""Access tokens of calendar accounts: refreshed ahead of expiry, and single-flight.

Google and Microsoft may rotate the refresh token on every refresh, so two refreshes
racing with the same refresh token can leave us with a revoked one. Hence one
refresher at a time per account, across threads and processes:

1. Fast path, no lock: a token that is good for more than ``REFRESH_AHEAD`` is used.
2. Otherwise take the account row's lock (``SELECT ... FOR UPDATE`` on PostgreSQL; the
   write transaction's ``BEGIN IMMEDIATE`` on SQLite) and read the row again: a token
   refreshed meanwhile by someone else is used as is (the second waiter never refreshes).
3. Still stale: claim the refresh lease (``refresh_lease_until``, ``refresh_lease_owner``)
   in that same short transaction, unless another refresher holds a live lease; then
   wait for it (poll) and go back to 2.
4. The lease holder calls the token endpoint with no transaction open (a network call
   must not hold SQLite's one write lock, which every booking needs), then stores the
   new tokens, bumps ``token_version`` and drops the lease in one transaction.

A refresher that dies leaves a lease that expires after ``LEASE``, longer than the
token call can take (its timeouts and retries are bounded). ``invalid_grant`` marks the
account ``needs_reauth``, its connections too, and opens ``calendar_reauth_required``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.calendars import alerts
from clinicbridge.calendars.errors import OAuthError, ReauthorizationRequired
from clinicbridge.calendars.models import CalendarAccount, CalendarConnection
from clinicbridge.calendars.oauth import TokenSet, token_request
from clinicbridge.calendars.runtime import connector_for, context
from clinicbridge.core.clock import Clock, SystemClock
from clinicbridge.core.errors import ExternalServiceError, NotFoundError
from clinicbridge.core.secrets import Secret
from clinicbridge.db.engine import Database
from clinicbridge.integrations.connectors.oauth_calendar import OAuthCalendarConnector
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.registry import IntegrationRegistry
from clinicbridge.vault.service import Vault

log = logging.getLogger("clinicbridge.calendars")
REFRESH_AHEAD = timedelta(minutes=5)
LEASE = timedelta(seconds=90)
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class AccessToken:
    value: Secret
    version: int
    expires_at: datetime


@dataclass(frozen=True)
class _Claim:
    owner: str
    version: int
    refresh_token: Secret


class TokenSource:
    """Access tokens for the accounts of one database; thread-safe (holds no state)."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        *,
        registry: IntegrationRegistry | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db, self.vault, self.registry = db, vault, registry
        self.clock = clock or SystemClock()
        self._sleep = sleep

    def get(self, account_id: str, *, stale_version: int | None = None) -> AccessToken:
        """A usable access token. ``stale_version``: the provider refused that version
        (401), so refresh it even if it has not expired yet (once, whoever asks)."""
        with self.db.read() as session:
            account = self._account(session, account_id)
            if not self._stale(account, stale_version):
                return self._token(account)
        deadline = time.monotonic() + LEASE.total_seconds() + 5
        while True:
            claim, token = self._claim_or_reuse(account_id, stale_version)
            if token is not None:
                return token
            if claim is not None:
                return self._refresh(account_id, claim)
            if time.monotonic() > deadline:
                raise ExternalServiceError(
                    "calendar token refresh: another refresher held the lease too long",
                    integration="calendar",
                    retryable=True,
                )
            self._sleep(POLL_SECONDS)

    # -- steps ----------------------------------------------------------------------

    def _claim_or_reuse(
        self, account_id: str, stale_version: int | None
    ) -> tuple[_Claim | None, AccessToken | None]:
        now = self.clock.now()
        with self.db.write() as session:
            account = self._account(session, account_id, lock=True)
            if not self._stale(account, stale_version):
                return None, self._token(account)  # refreshed by someone else meanwhile
            lease = account.refresh_lease_until
            if lease is not None and lease > now:
                return None, None  # someone is refreshing: wait for them
            owner = uuid.uuid4().hex
            account.refresh_lease_until, account.refresh_lease_owner = now + LEASE, owner
            refresh = self.vault.decrypt_field(
                account.tenant_id, account.id, "refresh_token", account.tokens["refresh_token"]
            )
            return _Claim(owner, account.token_version, refresh), None

    def _refresh(self, account_id: str, claim: _Claim) -> AccessToken:
        with self.db.read() as session:
            account = self._account(session, account_id)
            integration = session.get(Integration, account.integration_id)
            if integration is None:
                raise NotFoundError("No such integration.")
            connector = connector_for(integration, self.registry)
            assert isinstance(connector, OAuthCalendarConnector)
            conn = context(self.db, self.vault, integration)
        form = {"grant_type": "refresh_token", "refresh_token": claim.refresh_token.reveal()}
        try:
            tokens = token_request(conn, connector, form)
        except ReauthorizationRequired as exc:
            self._revoked(account_id, claim, exc)
            raise
        except (OAuthError, ExternalServiceError) as exc:
            self._release(account_id, claim, exc.detail)
            raise
        except BaseException:
            self._release(account_id, claim, "the token refresh was interrupted")
            raise
        return self._store(account_id, claim, tokens)

    def _store(self, account_id: str, claim: _Claim, tokens: TokenSet) -> AccessToken:
        now = self.clock.now()
        with self.db.write() as session:
            account = self._account(session, account_id, lock=True, any_status=True)
            if account.refresh_lease_owner != claim.owner:
                # Our lease ran out and another refresher took over: keep whichever tokens
                # came last only if nobody stored newer ones since our claim.
                log.warning("calendar token refresh outlived its lease")
                if account.token_version != claim.version:
                    return self._token(account)
            secret = {"access_token": Secret(tokens.access_token)}
            secret["refresh_token"] = (
                Secret(tokens.refresh_token) if tokens.refresh_token else claim.refresh_token
            )
            account.tokens = self.vault.seal(session, account.tenant_id, account.id, secret)
            account.access_expires_at = now + timedelta(seconds=tokens.expires_in)
            account.token_version = claim.version + 1
            account.refresh_lease_until = account.refresh_lease_owner = None
            account.last_refresh_at, account.last_error, account.updated_at = now, None, now
            if tokens.scopes is not None:
                account.scopes = sorted(set(tokens.scopes))
            return AccessToken(
                secret["access_token"], account.token_version, account.access_expires_at
            )

    def _release(self, account_id: str, claim: _Claim, error: str) -> None:
        with self.db.write() as session:
            account = self._account(session, account_id, lock=True, any_status=True)
            if account.refresh_lease_owner == claim.owner:
                account.refresh_lease_until = account.refresh_lease_owner = None
            account.last_error, account.updated_at = error[:500], self.clock.now()

    def _revoked(self, account_id: str, claim: _Claim, exc: ReauthorizationRequired) -> None:
        now = self.clock.now()
        with self.db.write() as session:
            account = self._account(session, account_id, lock=True, any_status=True)
            if account.refresh_lease_owner == claim.owner:
                account.refresh_lease_until = account.refresh_lease_owner = None
            mark_needs_reauth(session, account, exc.detail, now)

    # -- helpers --------------------------------------------------------------------

    def _account(
        self, session: Session, account_id: str, *, lock: bool = False, any_status: bool = False
    ) -> CalendarAccount:
        account = session.get(
            CalendarAccount, account_id, with_for_update=lock, populate_existing=lock
        )
        if account is None:
            raise NotFoundError("No such calendar account.")
        if not any_status and account.status != "active":
            raise ReauthorizationRequired(
                "the calendar authorization was revoked: authorize again",
                integration=account.integration_id,
                oauth_error="invalid_grant",
            )
        return account

    def _stale(self, account: CalendarAccount, stale_version: int | None) -> bool:
        if stale_version is not None and account.token_version == stale_version:
            return True
        return account.access_expires_at - self.clock.now() <= REFRESH_AHEAD

    def _token(self, account: CalendarAccount) -> AccessToken:
        value = self.vault.decrypt_field(
            account.tenant_id, account.id, "access_token", account.tokens["access_token"]
        )
        return AccessToken(value, account.token_version, account.access_expires_at)


def mark_needs_reauth(
    session: Session, account: CalendarAccount, detail: str, now: datetime
) -> None:
    """The refresh token is revoked: the account and its connections wait for a new
    authorization, and staff are alerted (once per incident)."""
    if account.status != "needs_reauth":
        record_system(
            session,
            account.tenant_id,
            "calendar_account.needs_reauth",
            "calendar_account",
            account.id,
            now=now,
            outcome="failure",
        )
    account.status, account.last_error, account.updated_at = "needs_reauth", detail[:500], now
    session.execute(
        sa.update(CalendarConnection)
        .where(CalendarConnection.account_id == account.id)
        .values(status="needs_reauth", updated_at=now)
    )
    alerts.open_reauth(
        session,
        tenant_id=account.tenant_id,
        account_id=account.id,
        details={
            "provider_id": account.provider_id,
            "integration_id": account.integration_id,
            "connector": account.connector,
        },
        now=now,
    )
