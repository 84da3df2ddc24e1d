"""``clinicbridge vault status`` and ``rotate-master-key``, run as real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clinicbridge.db.engine import Database
from clinicbridge.vault import KeyRing, Vault
from tests.conftest import Clinic

CLI = [sys.executable, "-m", "clinicbridge.cli"]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + args,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "CLINICBRIDGE_DATABASE_URL": database_url,
        "CLINICBRIDGE_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }


def test_help(env: dict[str, str]) -> None:
    for args in (["vault"], ["vault", "status"], ["vault", "rotate-master-key"]):
        result = run([*args, "--help"], env)
        assert result.returncode == 0 and "Usage" in result.stdout, (args, result.stderr)


def test_status_and_rotation(
    env: dict[str, str], db: Database, make_clinic: Callable[..., Clinic]
) -> None:
    key_file = Path(env["CLINICBRIDGE_MASTER_KEY_FILE"])
    vault = Vault(db, KeyRing.load(key_file))
    clinics = [make_clinic("Maple"), make_clinic("Birch")]
    sealed = {c.id: vault.seal(None, c.id, "int_1", {"api_key": f"key-of-{c.id}"}) for c in clinics}

    status = run(["vault", "status"], env)
    assert status.returncode == 0, status.stderr
    before = json.loads(status.stdout)
    assert before["active_master_version"] == 1 and before["master_versions"] == [1]
    assert before["data_keys"] == 2 and before["data_keys_by_master_version"] == {"1": 2}
    assert "master key v1 is active" in status.stderr

    rotated = run(["vault", "rotate-master-key", "--batch-size", "1"], env)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {
        "master_version": 2,
        "previous_master_version": 1,
        "rewrapped": 2,
        "failed": [],
        "pending_rewrap": 0,
    }
    after = json.loads(run(["vault", "status"], env).stdout)
    assert after["master_versions"] == [1, 2] and after["data_keys_by_master_version"] == {"2": 2}
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The running "service" (this process, old ring in memory) still opens everything.
    for c in clinics:
        assert vault.open(c.id, "int_1", sealed[c.id])["api_key"].reveal() == f"key-of-{c.id}"

    resumed = run(["vault", "rotate-master-key", "--resume"], env)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["rewrapped"] == 0
    assert json.loads(run(["vault", "status"], env).stdout)["master_versions"] == [1, 2]
    # Both operations are platform audit events.
    import sqlalchemy as sa

    from clinicbridge.audit.models import AuditEvent

    with db.read() as session:
        actions = session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.tenant_id == "").order_by(AuditEvent.seq)
        ).all()
    assert actions == ["vault.rotate_master_key", "vault.rewrap"]


def test_missing_key_file_is_an_error_not_a_new_key(env: dict[str, str]) -> None:
    for args in (["vault", "status"], ["vault", "rotate-master-key"]):
        result = run(args, env)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith("error: CLINICBRIDGE_MASTER_KEY_FILE: ")
    assert not Path(env["CLINICBRIDGE_MASTER_KEY_FILE"]).exists()


def test_world_readable_key_file_is_refused(env: dict[str, str]) -> None:
    key_file = Path(env["CLINICBRIDGE_MASTER_KEY_FILE"])
    KeyRing.load(key_file)
    key_file.chmod(0o644)
    result = run(["vault", "rotate-master-key"], env)
    assert result.returncode == 2 and "chmod 600" in result.stderr
    key_file.chmod(0o600)  # unchanged: no version was added
    assert KeyRing.load(key_file).versions == (1,)
