"""The ``clinicbridge`` command, run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from clinicbridge.db.engine import create_database
from clinicbridge.scheduling.models import Location, Provider, Service, WorkingHours

CLI = [sys.executable, "-m", "clinicbridge.cli"]


def run(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + args,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "CLINICBRIDGE_DATABASE_URL": database_url,
        "CLINICBRIDGE_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }


def test_help_on_every_command(env: dict[str, str]) -> None:
    for args in (
        [],
        ["serve"],
        ["worker"],
        ["db"],
        ["db", "upgrade"],
        ["db", "current"],
        ["tenant"],
        ["tenant", "create"],
        ["tenant", "list"],
        ["user"],
        ["user", "create"],
        ["demo"],
    ):
        result = run([*args, "--help"], env)
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout


def test_db_upgrade_and_current(empty_database_url: str, tmp_path: Path) -> None:
    env = {"CLINICBRIDGE_DATABASE_URL": empty_database_url}
    behind = run(["db", "current"], env)
    assert behind.returncode == 1 and behind.stdout.startswith("empty (behind head")
    assert run(["db", "upgrade"], env).returncode == 0
    current = run(["db", "current"], env)
    assert current.returncode == 0 and current.stdout.strip().endswith("(head)")


def test_tenant_create_prints_one_json_object(env: dict[str, str]) -> None:
    result = run(
        [
            "tenant",
            "create",
            "--name",
            "Clinique Santé",
            "--timezone",
            "America/Montreal",
            "--language",
            "fr-CA",
            "--currency",
            "cad",
        ],
        env,
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"tenant_id", "api_key"}
    assert created["api_key"].startswith("cb_live_")
    listed = [json.loads(line) for line in run(["tenant", "list"], env).stdout.splitlines()]
    assert {
        "id": created["tenant_id"],
        "slug": "clinique-sante",
        "name": "Clinique Santé",
        "timezone": "America/Montreal",
    } in listed


def test_tenant_create_rejects_bad_time_zone(env: dict[str, str]) -> None:
    result = run(["tenant", "create", "--name", "X", "--timezone", "Mars/Base"], env)
    assert result.returncode == 2
    assert "IANA" in result.stderr and result.stdout == ""


def test_user_create(env: dict[str, str]) -> None:
    tenant = json.loads(run(["tenant", "create", "--name", "Maple"], env).stdout)["tenant_id"]
    result = run(
        [
            "user",
            "create",
            "--tenant",
            tenant,
            "--email",
            "Desk@Maple.example.com",
            "--role",
            "front_desk",
        ],
        env,
    )
    assert result.returncode == 0, result.stderr
    user = json.loads(result.stdout)
    assert user["email"] == "desk@maple.example.com" and len(user["password"]) >= 16
    piped = run(
        [
            "user",
            "create",
            "--tenant",
            tenant,
            "--email",
            "dr@maple.example.com",
            "--role",
            "clinician",
            "--password-stdin",
        ],
        env,
        stdin="a long secret phrase\n",
    )
    assert "password" not in json.loads(piped.stdout)
    dup = run(
        [
            "user",
            "create",
            "--tenant",
            tenant,
            "--email",
            "desk@maple.example.com",
            "--role",
            "front_desk",
        ],
        env,
    )
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad_role = run(
        [
            "user",
            "create",
            "--tenant",
            tenant,
            "--email",
            "x@maple.example.com",
            "--role",
            "wizard",
        ],
        env,
    )
    assert bad_role.returncode == 2 and "--role: unknown role 'wizard'" in bad_role.stderr
    bad_email = run(
        ["user", "create", "--tenant", tenant, "--email", "not-an-email", "--role", "clinician"],
        env,
    )
    assert bad_email.returncode == 2 and "--email" in bad_email.stderr
    no_tenant = run(
        [
            "user",
            "create",
            "--tenant",
            "ten_" + "0" * 26,
            "--email",
            "x@maple.example.com",
            "--role",
            "clinician",
        ],
        env,
    )
    assert no_tenant.returncode == 1 and "No such clinic" in no_tenant.stderr


def test_demo_is_idempotent_and_rotates_its_key(env: dict[str, str]) -> None:
    first = run(["demo"], env)
    assert first.returncode == 0, first.stderr
    second = run(["demo"], env)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["tenant_id"] == b["tenant_id"] and a["api_key"] != b["api_key"]
    assert "/admin" in first.stderr and a["api_key"] in first.stderr
    listed = run(["tenant", "list"], env).stdout.splitlines()
    assert len(listed) == 1 and json.loads(listed[0])["timezone"] == "America/Toronto"
    db = create_database(env["CLINICBRIDGE_DATABASE_URL"])
    try:
        with db.read() as session:
            count = {
                model.__tablename__: session.scalar(sa.select(sa.func.count()).select_from(model))
                for model in (Location, Provider, Service, WorkingHours)
            }
            modalities = sorted(session.scalars(sa.select(Service.modality)))
            weekdays = set(session.scalars(sa.select(WorkingHours.weekday)))
    finally:
        db.dispose()
    # created once although the demo ran twice
    assert count == {"locations": 1, "providers": 2, "services": 2, "working_hours": 10}
    assert modalities == ["in_person", "video"] and weekdays == {0, 1, 2, 3, 4}


def test_invalid_setting_exits_2_with_one_line(env: dict[str, str]) -> None:
    result = run(["serve"], {**env, "CLINICBRIDGE_PORT": "eighty"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: CLINICBRIDGE_PORT: Input should be a valid integer")


def test_serve_refuses_a_world_readable_master_key(env: dict[str, str], tmp_path: Path) -> None:
    key = Path(env["CLINICBRIDGE_MASTER_KEY_FILE"])
    key.write_text("x")
    key.chmod(0o644)
    result = run(["serve"], env)
    assert result.returncode == 2
    assert "CLINICBRIDGE_MASTER_KEY_FILE" in result.stderr and "chmod 600" in result.stderr


def test_console_script_is_installed() -> None:
    assert shutil.which("clinicbridge", path=str(Path(sys.executable).parent))


def test_webhooks_commands(env: dict[str, str]) -> None:
    listed = run(["webhooks", "list"], env)
    assert listed.returncode == 0 and listed.stdout == ""
    missing = run(["webhooks", "show", "whe_" + "0" * 26], env)
    assert missing.returncode == 1 and "No such webhook event" in missing.stderr
    assert run(["webhooks", "replay", "whe_" + "0" * 26], env).returncode == 1
