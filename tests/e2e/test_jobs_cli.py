"""``clinicbridge jobs`` as a process."""

from __future__ import annotations

import json
from datetime import timedelta

from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs import queue as q
from tests.e2e.test_cli import env, run  # noqa: F401  (fixture)


def _setup(db: Database) -> tuple[str, str]:
    now = SystemClock().now()
    with db.write() as session:
        dead = q.enqueue(session, "reminder.send", {"booking": "bkg_1"}, now=now).id
        waiting = q.enqueue(session, "calendar.sync", now=now, run_at=now + timedelta(hours=1)).id
    q.claim(db, worker_id="w", queues=["default"], limit=10, lease=timedelta(seconds=30), now=now)
    q.record_outcomes(db, "w", [q.Outcome(dead, "dead", error="ExternalServiceError: down")], now)
    return dead, waiting


def test_list_show_retry_cancel_purge(db: Database, env: dict[str, str]) -> None:  # noqa: F811
    dead, waiting = _setup(db)
    listed = [
        json.loads(line)
        for line in run(["jobs", "list", "--state", "dead"], env).stdout.splitlines()
    ]
    assert [j["id"] for j in listed] == [dead]
    shown = json.loads(run(["jobs", "show", dead], env).stdout)
    assert (
        shown["payload"] == {"booking": "bkg_1"}
        and shown["last_error"] == "ExternalServiceError: down"
    )
    assert run(["jobs", "show", "job_" + "0" * 26], env).returncode == 1
    bad_state = run(["jobs", "list", "--state", "sleeping"], env)
    assert bad_state.returncode == 2 and "--state" in bad_state.stderr

    retried = run(["jobs", "retry", dead], env)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["state"] == "pending"
    assert run(["jobs", "retry", dead], env).returncode == 1
    assert run(["jobs", "retry"], env).returncode == 2
    assert json.loads(run(["jobs", "cancel", waiting], env).stdout)["state"] == "cancelled"

    q.claim(
        db,
        worker_id="w2",
        queues=["default"],
        limit=10,
        lease=timedelta(seconds=30),
        now=SystemClock().now(),
    )
    q.record_outcomes(db, "w2", [q.Outcome(dead, "dead", error="X")], SystemClock().now())
    nope = run(["jobs", "retry", "--all-dead", "--kind", "nope"], env)
    assert nope.returncode == 0, nope.stderr
    assert json.loads(nope.stdout) == {"retried": 0}
    assert json.loads(run(["jobs", "retry", "--all-dead"], env).stdout) == {"retried": 1}
    assert json.loads(run(["jobs", "purge", "--older-than", "0s"], env).stdout) == {"deleted": 1}
    assert run(["jobs", "purge", "--older-than", "a while"], env).returncode == 2


def test_worker_stops_gracefully_on_sigterm(db: Database, env: dict[str, str]) -> None:  # noqa: F811
    import signal
    import subprocess
    import sys
    import time

    from clinicbridge.jobs.heartbeat import freshest_heartbeat_age

    proc = subprocess.Popen(
        [sys.executable, "-m", "clinicbridge.cli", "worker"],
        env={**__import__("os").environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with db.read() as session:
                if freshest_heartbeat_age(session, SystemClock().now()) is not None:
                    break
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with db.read() as session:  # it said goodbye: no stale heartbeat left behind
        assert freshest_heartbeat_age(session, SystemClock().now()) is None
