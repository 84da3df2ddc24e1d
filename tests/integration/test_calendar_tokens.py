"""Access tokens: refreshed ahead of expiry, on a refused token, and single-flight:
10 concurrent sync jobs of one account (threads on one database, SQLite or PostgreSQL)
cause exactly one refresh at the fake token endpoint, which rotates refresh tokens and
would answer ``invalid_grant`` to a second refresh with the same one."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars.models import CalendarAccount
from clinicbridge.calendars.tokens import TokenSource
from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.settings import Settings
from clinicbridge.testing.microsoft_graph import FakeGraph
from clinicbridge.vault.shared import shared_vault
from tests.conftest import Clinic
from tests.integration.calendar_helpers import (
    Fakes,
    authorize,
    connect,
    fakes,
    microsoft_integration,
    practice,
    sync,
)

__all__ = ["fakes"]


def _expire(db: Database, account_id: str, at: datetime) -> None:
    with db.write() as session:
        session.execute(
            sa.update(CalendarAccount)
            .where(CalendarAccount.id == account_id)
            .values(access_expires_at=at)
        )


def _account(db: Database, account_id: str) -> CalendarAccount:
    with db.read() as session:
        found = session.get(CalendarAccount, account_id)
        assert found is not None
        return found


@pytest.fixture
def account(client: TestClient, clinic: Clinic, fakes: Fakes) -> tuple[str, str, str]:
    setup = practice(client, clinic)
    integration = microsoft_integration(client, clinic)
    done = authorize(client, clinic, setup.provider, integration, fakes.graph.oauth)
    return done["account"]["id"], setup.provider, integration


def test_refresh_ahead_of_expiry_and_reuse(
    db: Database, settings: Settings, fakes: Fakes, account: tuple[str, str, str]
) -> None:
    account_id = account[0]
    tokens = TokenSource(db, shared_vault(db, settings.master_key_file))
    first = tokens.get(account_id)
    assert fakes.graph.oauth.refreshes == 0  # fresh from the authorization
    _expire(db, account_id, SystemClock().now() + timedelta(minutes=10))
    assert tokens.get(account_id).value.reveal() == first.value.reveal()
    _expire(db, account_id, SystemClock().now() + timedelta(minutes=4))  # inside the margin
    second = tokens.get(account_id)
    assert fakes.graph.oauth.refreshes == 1 and second.version == first.version + 1
    assert second.value.reveal() != first.value.reveal()
    assert fakes.graph.oauth.valid_access_token(f"Bearer {second.value.reveal()}")
    row = _account(db, account_id)
    assert row.refresh_lease_until is None and row.last_refresh_at is not None
    # Microsoft rotated the refresh token: the new one was stored, the next refresh works
    _expire(db, account_id, SystemClock().now())
    tokens.get(account_id)
    assert fakes.graph.oauth.refreshes == 2 and fakes.graph.oauth.failed_refreshes == 0


def test_a_refused_token_is_refreshed_once(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes,
    account: tuple[str, str, str],
) -> None:  # fmt: skip
    _, provider, integration = account
    connection = connect(client, clinic, provider, integration, "primary")
    fakes.graph.oauth.expire_access_tokens()  # revoked early: we still think it is valid
    fakes.graph.put(
        FakeGraph.timed(
            "x",
            SystemClock().now() + timedelta(days=1),
            SystemClock().now() + timedelta(days=1, hours=1),
        )
    )
    assert sync(db, settings, connection["id"], SystemClock()).status == "synced"
    assert fakes.graph.oauth.refreshes == 1


@pytest.mark.parametrize("jobs", [10])
def test_ten_concurrent_jobs_cause_exactly_one_refresh(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes,
    account: tuple[str, str, str], jobs: int,
) -> None:  # fmt: skip
    account_id, provider, integration = account
    calendars = [f"cal-{i}" for i in range(jobs)]
    for calendar in calendars:
        fakes.graph.calendars[calendar] = {}
    connections = [connect(client, clinic, provider, integration, c)["id"] for c in calendars]
    before = fakes.graph.oauth.refreshes
    _expire(db, account_id, SystemClock().now() - timedelta(minutes=1))
    fakes.graph.oauth.refresh_delay = 0.3  # a slow token endpoint widens the race
    start = threading.Barrier(jobs)
    results: list[str] = []
    errors: list[BaseException] = []

    def job(connection_id: str) -> None:
        start.wait()
        try:
            results.append(sync(db, settings, connection_id, SystemClock()).status)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert results == ["synced"] * jobs
    assert fakes.graph.oauth.refreshes - before == 1
    assert fakes.graph.oauth.failed_refreshes == 0  # the rotated token was never spent twice
    row = _account(db, account_id)
    assert row.status == "active" and row.refresh_lease_until is None


def test_invalid_grant_marks_needs_reauth(
    db: Database, settings: Settings, fakes: Fakes, account: tuple[str, str, str]
) -> None:
    from clinicbridge.calendars.errors import ReauthorizationRequired

    account_id = account[0]
    tokens = TokenSource(db, shared_vault(db, settings.master_key_file))
    fakes.graph.oauth.revoke_all()
    _expire(db, account_id, SystemClock().now())
    with pytest.raises(ReauthorizationRequired):
        tokens.get(account_id)
    row = _account(db, account_id)
    assert row.status == "needs_reauth" and row.refresh_lease_until is None
    assert "invalid_grant" in (row.last_error or "")
    with pytest.raises(ReauthorizationRequired):
        tokens.get(account_id)  # no second call to the provider
    assert fakes.graph.oauth.failed_refreshes == 1
