"""Shared fixtures: a migrated database per test (SQLite or PostgreSQL), apps, clinics.

Set ``CLINICBRIDGE_TEST_DATABASE_URL`` to a PostgreSQL URL to run the suite on
PostgreSQL: a template database is migrated once per session and cloned per test.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.core.api_keys import issue_key
from clinicbridge.core.clock import SystemClock
from clinicbridge.core.tenancy import create_tenant
from clinicbridge.db.engine import Database, create_database, normalize_url
from clinicbridge.db.migrate import upgrade
from clinicbridge.messaging import smtp_sender
from clinicbridge.settings import Settings, load_settings

PG_URL = os.environ.get("CLINICBRIDGE_TEST_DATABASE_URL", "")
ON_POSTGRES = bool(PG_URL)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's or CI's CLINICBRIDGE_* settings."""
    for name in list(os.environ):
        if name.startswith("CLINICBRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _close_kept_smtp_sessions() -> Iterator[None]:
    """The send job keeps SMTP sessions open between messages; no test leaves one open."""
    yield
    smtp_sender.POOL.close_all()


def _pg_admin_engine() -> sa.Engine:
    return sa.create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")


def _pg_url_for(database: str) -> str:
    return (
        sa.make_url(normalize_url(PG_URL))
        .set(database=database)
        .render_as_string(hide_password=False)
    )


@contextmanager
def _pg_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL database (optionally cloned from a template); yields its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clone}')
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database to copy: a file on SQLite, a template database on PostgreSQL."""
    if not ON_POSTGRES:
        path = tmp_path_factory.mktemp("template") / "template.db"
        db = create_database(f"sqlite:///{path}")
        upgrade(db.engine)
        db.dispose()
        yield str(path)
        return
    with _pg_database("cb_template") as name:
        db = create_database(_pg_url_for(name))
        upgrade(db.engine)
        db.dispose()
        yield name


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (for migration tests)."""
    if not ON_POSTGRES:
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with _pg_database("cb_empty") as name:
        yield _pg_url_for(name)


@pytest.fixture
def database_url(_template: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    if not ON_POSTGRES:
        path = tmp_path / "clinicbridge.db"
        shutil.copyfile(_template, path)
        yield f"sqlite:///{path}"
        return
    with _pg_database("cb_test", template=_template) as name:
        yield _pg_url_for(name)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = create_database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(database_url=database_url, master_key_file=tmp_path / "master.key")


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings, db=db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass
class Clinic:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def make_clinic(db: Database) -> Callable[..., Clinic]:
    """Create a clinic and an API key with the given role (owner by default)."""

    def factory(name: str = "Maple Family Clinic", role: str = "owner") -> Clinic:
        now = SystemClock().now()
        with db.write() as session:
            tenant = create_tenant(
                session, name=name, now=now, timezone="America/Toronto", currency="CAD"
            )
            _, raw = issue_key(
                session, tenant_id=tenant.id, name="test", role=role, now=now, created_by=None
            )
            return Clinic(tenant.id, raw)

    return factory


@pytest.fixture
def clinic(make_clinic: Callable[..., Clinic]) -> Clinic:
    return make_clinic()


def add_key(db: Database, clinic: Clinic, role: str) -> Clinic:
    """Another API key of the same clinic, with another role."""
    with db.write() as session:
        _, raw = issue_key(
            session,
            tenant_id=clinic.id,
            name=f"{role} key",
            role=role,
            now=SystemClock().now(),
            created_by=None,
        )
    return Clinic(clinic.id, raw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    settings: Settings


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """The real app under uvicorn in a thread, with its embedded worker."""
    port = free_port()
    settings = load_settings(
        database_url=database_url,
        master_key_file=tmp_path / "master.key",
        port=port,
        worker_heartbeat_seconds=0.5,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, embedded_worker=True),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("live server did not start")
        time.sleep(0.02)
    yield LiveServer(f"http://127.0.0.1:{port}", settings)
    server.should_exit = True
    thread.join(10)
