"""``clinicbridge audit verify`` and ``audit export``, and what the other commands record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clinicbridge.db.engine import create_database
from tests.audit_tamper import tamper
from tests.e2e.test_cli import run


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "CLINICBRIDGE_DATABASE_URL": database_url,
        "CLINICBRIDGE_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }


def _export(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = run(["audit", "export", "--format", "jsonl", *args], env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _clinic(env: dict[str, str]) -> dict[str, str]:
    created = run(["tenant", "create", "--name", "Maple"], env)
    assert created.returncode == 0, created.stderr
    tenant: dict[str, str] = json.loads(created.stdout)
    email, tenant_id = "a@maple.example.com", tenant["tenant_id"]
    user = run(
        ["user", "create", "--tenant", tenant_id, "--email", email, "--role", "front_desk"], env
    )
    assert user.returncode == 0, user.stderr
    tenant["password"] = json.loads(user.stdout)["password"]
    return tenant


def test_help(env: dict[str, str]) -> None:
    for args in (["audit"], ["audit", "verify"], ["audit", "export"]):
        result = run([*args, "--help"], env)
        assert result.returncode == 0 and "Usage" in result.stdout


def test_cli_commands_are_audited_as_the_system(env: dict[str, str]) -> None:
    clinic = _clinic(env)
    events = _export(env, "--tenant", clinic["tenant_id"])
    assert [e["action"] for e in events] == ["tenant.create", "api_key.create", "user.create"]
    assert {(e["actor_type"], e["actor_id"], e["tenant_id"]) for e in events} == {
        ("system", "cli", clinic["tenant_id"])
    }
    assert [e["seq"] for e in events] == [1, 2, 3] and events[0]["encoding"] == 1
    text = json.dumps(events)
    assert clinic["api_key"] not in text and clinic["password"] not in text

    first, second = run(["demo"], env), run(["demo"], env)
    demo = json.loads(second.stdout)["tenant_id"]
    assert [e["action"] for e in _export(env, "--tenant", demo)] == [
        "tenant.create",
        "user.create",
        "api_key.create",
        "location.create",  # the demo schedule, created once
        "provider.create",
        "provider.create",
        "service.create",
        "service.create",
        "user.update",  # the demo owner's new password (masked)
        "api_key.revoke",
        "api_key.create",
    ]
    text = json.dumps(_export(env))
    assert json.loads(first.stdout)["api_key"] not in text and "cb_live_" not in text


def test_verify_counts_then_names_the_first_bad_event(
    env: dict[str, str], database_url: str
) -> None:
    bad, good = _clinic(env), _clinic(env)
    result = run(["audit", "verify"], env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["verified"], summary["chains"]) == (True, 6, 2)
    assert {h["seq"] for h in summary["heads"]} == {3} and summary["problems"] == []
    assert "verified 6 events in 2 chain(s)" in result.stderr

    target = _export(env, "--tenant", bad["tenant_id"])[1]
    db = create_database(database_url)
    try:
        tamper(db, "UPDATE audit_events SET actor_id = 'usr_x' WHERE id = :id", id=target["id"])
    finally:
        db.dispose()
    result = run(["audit", "verify"], env)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["ok"] is False and summary["verified"] == 1 + 3
    (problem,) = summary["problems"]
    assert problem == {
        "tenant_id": bad["tenant_id"],
        "kind": "changed",
        "seq": 2,
        "event_id": target["id"],
        "detail": f"event {target['id']} (seq 2) was changed: its content does not match its hash",
    }
    assert f"error: clinic {bad['tenant_id']}: event {target['id']} (seq 2) was changed" in (
        result.stderr
    )
    assert run(["audit", "verify", "--tenant", good["tenant_id"]], env).returncode == 0


def test_export_filters_and_streams_json_lines(env: dict[str, str]) -> None:
    maple, birch = _clinic(env), _clinic(env)
    everything = _export(env)
    assert [e["tenant_id"] for e in everything] == sorted(e["tenant_id"] for e in everything)
    assert len(everything) == 6 and {e["tenant_id"] for e in everything} == {
        maple["tenant_id"],
        birch["tenant_id"],
    }
    assert set(everything[0]) == {
        "id", "tenant_id", "seq", "occurred_at", "actor_type", "actor_id", "action",
        "resource_type", "resource_id", "request_id", "ip", "outcome", "phi", "diff",
        "prev_hash", "hash", "encoding",
    }  # fmt: skip
    assert everything[0]["occurred_at"].endswith("Z")
    assert _export(env, "--since", "2999-01-01T00:00:00+00:00") == []
    assert _export(env, "--tenant", "platform") == []
    for bad in (["--since", "yesterday"], ["--format", "csv"]):
        result = run(["audit", "export", *bad], env)
        assert result.returncode == 2 and result.stdout == ""
