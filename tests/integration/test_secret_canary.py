"""A canary credential never surfaces: not in logs, responses, errors, jobs or audit rows.

The canary is sealed in the vault, opened by a background job that calls a
failing outside service with it (and carelessly logs it), then the API and the
CLI are used to look at everything that happened.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import SystemClock
from clinicbridge.core.logs import configure_logging
from clinicbridge.core.secrets import Secret
from clinicbridge.db.engine import Database
from clinicbridge.http import OutboundClient
from clinicbridge.http.models import HttpCall
from clinicbridge.jobs import queue as q
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, JobRegistry
from clinicbridge.jobs.worker import Worker, WorkerConfig
from clinicbridge.settings import Settings
from clinicbridge.vault import KeyRing, Vault
from tests.conftest import Clinic

CANARY = "sk_live_CANARY_7f3a9c1e5b2d4f60"
INTEGRATION = "int_canary"


def _rows_text(db: Database, *models: type) -> str:
    with db.read() as session:
        return "\n".join(
            json.dumps([str(v) for v in row], default=str)
            for model in models
            for row in session.execute(sa.select(model.__table__)).all()  # type: ignore[attr-defined]
        )


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Our real log pipeline (JSON formatter + redaction filter), into a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging("DEBUG", stream=buffer)
    yield buffer
    root.handlers[:], root.level = saved


def test_canary_never_surfaces(
    json_logs: io.StringIO,
    db: Database,
    database_url: str,
    settings: Settings,
    client: TestClient,
    clinic: Clinic,
    tmp_path: Path,
) -> None:
    vault = Vault(db, KeyRing.load(settings.master_key_file))
    with db.write() as session:
        sealed = vault.seal(session, clinic.id, INTEGRATION, {"api_key": Secret(CANARY)})
    assert CANARY not in json.dumps(sealed)

    def failing_provider(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            502, json={"error": "upstream down", "echo": request.headers["authorization"]}
        )

    def charge(job: JobContext) -> None:
        token = vault.open(clinic.id, INTEGRATION, sealed)["api_key"]
        logging.getLogger("clinicbridge.test").warning(
            "calling the provider with %s", token.reveal()
        )
        with OutboundClient(
            job.db,
            tenant_id=clinic.id,
            integration=INTEGRATION,
            base_url="https://pay.example.com",
            headers={"Authorization": f"Bearer {token.reveal()}"},
            transport=httpx.MockTransport(failing_provider),
            sleep=lambda _s: None,
        ) as http:
            http.post(
                f"/v1/charges?key={token.reveal()}",
                operation="charges.create",
                json={"key": token.reveal()},
                idempotency_key=job.job_id,
            )

    jobs = JobRegistry()
    jobs.register("canary.charge", charge)
    worker = Worker(db, SystemClock(), jobs=jobs, config=WorkerConfig(heartbeat_seconds=0.2))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    with db.write() as session:
        job_id = q.enqueue(
            session, "canary.charge", now=SystemClock().now(), tenant_id=clinic.id, max_attempts=1
        ).id
    deadline = time.monotonic() + 15
    while True:
        with db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.state == "dead":
                break
        assert time.monotonic() < deadline, job.state
        time.sleep(0.05)
    worker.stop()
    thread.join(10)
    assert job.last_error and job.last_error.startswith("ExternalServiceError")

    # The API: the job, the jobs list, the audit log, an error caused by the canary as input.
    bodies = [
        client.get(f"/api/v1/jobs/{job_id}", headers=clinic.headers).text,
        client.get("/api/v1/jobs?state=dead", headers=clinic.headers).text,
        client.get("/api/v1/audit-events", headers=clinic.headers).text,
        client.post(
            "/api/v1/api-keys", headers=clinic.headers, json={"name": 7, "role": CANARY}
        ).text,
        client.get("/api/v1/tenant", headers={"Authorization": f"Bearer {CANARY}"}).text,
    ]
    # The CLI, as an operator would run it.
    env = {
        **os.environ,
        "CLINICBRIDGE_DATABASE_URL": database_url,
        "CLINICBRIDGE_MASTER_KEY_FILE": str(settings.master_key_file),
    }
    for args in (
        ["jobs", "show", job_id],
        ["jobs", "list"],
        ["vault", "status"],
        ["audit", "export", "--since", "2000-01-01T00:00:00Z", "--format", "jsonl"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "clinicbridge.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (args, result.stderr)
        bodies += [result.stdout, result.stderr]

    logged = json_logs.getvalue()
    assert "calling the provider with **********" in logged  # the careless line, redacted
    stored = _rows_text(db, Job, HttpCall, AuditEvent)
    assert CANARY not in logged
    assert CANARY not in stored
    for body in bodies:
        assert CANARY not in body
