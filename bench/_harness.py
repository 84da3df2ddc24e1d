"""Shared pieces of the HTTP benchmarks: a seeded server process and wrk runs.

The server is the real app plus one unauthenticated hello-world route, so the
baseline shares the middleware, the server and the worker count with the route
under test and the ratio between them is what we compare.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    pid: int
    api_key: str
    tenant_id: str

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return round(int(match.group(1)) / 1024, 1) if match else -1.0


@contextmanager
def running_server(database_url: str | None = None) -> Iterator[Server]:
    """Migrate a fresh database, create a clinic, and serve the app with a hello route."""
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{tmp}/bench.db"
        env = {
            **os.environ,
            "CLINICBRIDGE_DATABASE_URL": url,
            "CLINICBRIDGE_MASTER_KEY_FILE": f"{tmp}/master.key",
            "CLINICBRIDGE_LOG_LEVEL": "WARNING",
        }
        cli = [sys.executable, "-m", "clinicbridge.cli"]
        subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
        created = subprocess.run(
            [*cli, "tenant", "create", "--name", "Bench Clinic"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        tenant = json.loads(created.stdout)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "_server.py"), str(port)],
            env=env,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("bench server did not start")
                time.sleep(0.1)
            yield Server(base, proc.pid, tenant["api_key"], tenant["tenant_id"])
        finally:
            proc.terminate()
            proc.wait(10)


def wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    headers: dict[str, str] | None = None,
    script: str | None = None,
    rate: int | None = None,
) -> dict[str, float]:
    """Run wrk and return requests/s, p50/p99 latency in ms, and non-2xx count."""
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if script:
        args += ["-s", script]
    args.append(url)
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    try:
        return parse_wrk(out)
    except (AttributeError, ValueError) as exc:
        raise RuntimeError(f"could not read wrk's output:\n{out}") from exc


def _ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if match is None:
        raise ValueError(f"unexpected wrk latency {value!r}")
    number, unit = match.groups()
    return round(float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit], 3)


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": round(rps, 1),
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }
