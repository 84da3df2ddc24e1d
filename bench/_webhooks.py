"""Pieces of the webhook-ingest benchmark: a server, signed Stripe events, two load generators.

* ``webhook_server``: migrate a fresh database (a new SQLite file, or a new database
  on the given PostgreSQL server), create a clinic with the CLI and a Stripe
  integration through the API, and serve the real app plus ``/bench/hello``.
* ``signed_events``: distinct Stripe events signed with the official ``stripe``
  package, timestamped now (the inbox accepts five minutes of skew).
* ``wrk_webhooks``: closed-loop peak with wrk; a Lua script cycles through the
  pre-signed requests and counts what the server answered.
* ``open_loop``: a fixed-rate (open-loop) sender on raw asyncio sockets, since
  Debian's wrk has no ``-R``. Latency runs from each request's scheduled send
  time, so a stalled server cannot hide its queue (no coordinated omission).

Run as a script, this file is the bench server: ``_webhooks.py PORT [--no-worker]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa
import stripe

from _harness import ROOT, Server, free_port, parse_wrk

WHSEC = "whsec_benchIngestSecret0123456789abcdef"
STRIPE_KEY = "sk_test_51Bench00000000000000000000000"
EVENT_TYPE = "payment_intent.succeeded"


@dataclass
class WebhookServer(Server):
    integration_id: str
    database_url: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]  # what a worker process for this server's database needs

    @property
    def path(self) -> str:
        return f"/webhooks/{self.integration_id}"


@dataclass(frozen=True)
class SignedEvent:
    event_id: str
    body: bytes
    signature: str

    def http_request(self, path: str, host: str) -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {self.signature}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


def signed_events(n: int, prefix: str) -> list[SignedEvent]:
    """``n`` distinct ``payment_intent.succeeded`` events signed for the bench integration."""
    now = int(time.time())
    out = []
    for i in range(n):
        event_id = f"evt_{prefix}_{i:07d}"
        body = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": EVENT_TYPE,
                "created": now,
                "data": {"object": {"id": f"pi_{prefix}_{i}", "amount": 4200, "currency": "usd"}},
            }
        )
        header = stripe.WebhookSignature.generate_signature_header(body, WHSEC, timestamp=now)
        out.append(SignedEvent(event_id, body.encode(), str(header)))
    return out


# -- the server ----------------------------------------------------------------------------


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url``; dropped afterwards."""
    from clinicbridge.db.engine import normalize_url

    name = f"cb_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def webhook_server(
    postgres_url: str | None = None, *, embedded_worker: bool = False
) -> Iterator[WebhookServer]:
    """A seeded server with a Stripe integration, on fresh SQLite or a fresh PostgreSQL db."""
    with tempfile.TemporaryDirectory() as tmp:
        if postgres_url:
            with postgres_database(postgres_url) as url:
                yield from _serve(url, tmp, embedded_worker)
        else:
            yield from _serve(f"sqlite:///{tmp}/bench.db", tmp, embedded_worker)


def _serve(url: str, tmp: str, embedded_worker: bool) -> Iterator[WebhookServer]:
    env = {
        **os.environ,
        "CLINICBRIDGE_DATABASE_URL": url,
        "CLINICBRIDGE_MASTER_KEY_FILE": f"{tmp}/master.key",
        "CLINICBRIDGE_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "clinicbridge.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    created = subprocess.run(
        [*cli, "tenant", "create", "--name", "Bench Clinic"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    tenant = json.loads(created.stdout)
    port = free_port()
    argv = [sys.executable, __file__, str(port)] + ([] if embedded_worker else ["--no-worker"])
    proc = subprocess.Popen(argv, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("bench server did not start")
            time.sleep(0.1)
        made = httpx.post(
            f"{base}/api/v1/integrations",
            headers={"Authorization": f"Bearer {tenant['api_key']}"},
            json={
                "connector": "stripe",
                "name": "Stripe (bench)",
                "credentials": {"api_key": STRIPE_KEY, "webhook_secret": WHSEC},
                "settings": {},
            },
            timeout=10,
        )
        made.raise_for_status()
        yield WebhookServer(
            base, proc.pid, tenant["api_key"], tenant["tenant_id"], made.json()["id"], url, proc,
            env,
        )  # fmt: skip
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- wrk with cycling signed requests -------------------------------------------------------

_LUA = r"""
local reqs, n, i = {}, 0, 0
sent, ok, bad, accepted, duplicates, wrapped = 0, 0, 0, 0, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    local sig, body = line:match("^([^\t]*)\t(.*)$")
    n = n + 1
    reqs[n] = wrk.format("POST", args[2],
      {["Content-Type"] = "application/json", ["Stripe-Signature"] = sig}, body)
  end
end

function request()
  i = i + 1
  if i > n then i, wrapped = 1, wrapped + 1 end
  sent = sent + 1
  return reqs[i]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    accepted = accepted + (tonumber(body:match('"received":(%d+)')) or 0)
    duplicates = duplicates + (tonumber(body:match('"duplicates":(%d+)')) or 0)
  else
    bad = bad + 1
  end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local t = {sent = 0, ok = 0, bad = 0, accepted = 0, duplicates = 0, wrapped = 0}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  io.write(string.format(
    "LUA sent=%d ok=%d bad=%d accepted=%d duplicates=%d wrapped=%d errors=%d\n",
    t.sent, t.ok, t.bad, t.accepted, t.duplicates, t.wrapped,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
"""


def wrk_webhooks(
    server: WebhookServer, events: Sequence[SignedEvent], *, seconds: int, connections: int
) -> dict[str, float]:
    """Closed-loop wrk run over ``events`` in order; the first ``sent`` of them were sent."""
    with tempfile.TemporaryDirectory() as tmp:
        script, data = Path(tmp, "webhooks.lua"), Path(tmp, "events.tsv")
        script.write_text(_LUA)
        with data.open("w") as out:
            for e in events:
                out.write(f"{e.signature}\t{e.body.decode()}\n")
        args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
        args += ["-s", str(script), server.url, "--", str(data), server.path]
        run = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        if run.returncode != 0:
            raise RuntimeError(f"wrk failed:\n{run.stdout}\n{run.stderr}")
    result = parse_wrk(run.stdout)
    match = re.search(r"^LUA (.*)$", run.stdout, re.M)
    if match is None:
        raise RuntimeError(f"no counts from the wrk script:\n{run.stdout}")
    counts = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    return {**result, **counts}


# -- the open-loop, fixed-rate sender -------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    key: str  # the event id (or any label) the request was sent for
    status: int  # 0: no answer (see error)
    latency_ms: float  # from the scheduled send time to the whole answer
    accepted: int  # "received" in a 2xx answer of the inbox
    error: str = ""


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        body = await self.reader.readexactly(int(length.group(1))) if length else b""
        self.used = True
        return status, body

    def close(self) -> None:
        self.writer.close()


_NO_ANSWER = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


async def _open_loop(
    host: str,
    port: int,
    requests: Sequence[tuple[str, bytes]],
    rate: float,
    connections: int,
    timeout: float,
) -> list[Sent]:
    idle: deque[_Conn] = deque()  # FIFO: every kept connection is used often, none idles out
    opened = 0
    freed = asyncio.Condition()
    results: list[Sent] = []

    async def take() -> _Conn:
        nonlocal opened
        async with freed:
            while not idle and opened >= connections:
                await freed.wait()
            if idle:
                return idle.popleft()
            opened += 1
        try:
            return _Conn(*await asyncio.open_connection(host, port))
        except OSError:
            await give(None)
            raise

    async def give(conn: _Conn | None) -> None:
        nonlocal opened
        async with freed:
            if conn is None:
                opened -= 1
            else:
                idle.append(conn)
            freed.notify()

    async def exchange(request: bytes) -> tuple[int, bytes]:
        for _ in range(2):  # a kept connection the server closed meanwhile: once more, anew
            conn = await take()
            reused = conn.used
            try:
                answer = await conn.exchange(request)
            except BaseException as exc:
                conn.close()
                await give(None)
                if reused and isinstance(exc, asyncio.IncompleteReadError) and not exc.partial:
                    continue
                raise
            await give(conn)
            return answer
        raise ConnectionError("closed twice")

    async def one(key: str, request: bytes, scheduled: float) -> None:
        status, body, error = 0, b"", ""
        try:
            async with asyncio.timeout(timeout):
                status, body = await exchange(request)
        except (*_NO_ANSWER, TimeoutError) as exc:
            error = type(exc).__name__
        accepted = 0
        if 200 <= status < 300:
            found = re.search(rb'"received":(\d+)', body)
            accepted = int(found.group(1)) if found else 0
        latency = (time.perf_counter() - scheduled) * 1000
        results.append(Sent(key, status, latency, accepted, error))

    # perf_counter, not loop.time(): uvloop's clock counts whole milliseconds
    start = time.perf_counter() + 0.05
    tasks = []
    for i, (key, request) in enumerate(requests):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(key, request, scheduled)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return results


def open_loop(
    server: WebhookServer,
    requests: Sequence[tuple[str, bytes]],
    *,
    rate: float,
    connections: int = 64,
    timeout: float = 10.0,
) -> list[Sent]:
    """Send ``requests`` (key, raw HTTP/1.1) at ``rate`` per second whatever the answers."""
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        run = asyncio.run
    host, port = server.url.removeprefix("http://").split(":")
    return run(_open_loop(host, int(port), requests, rate, connections, timeout))


def webhook_requests(
    server: WebhookServer, events: Sequence[SignedEvent]
) -> list[tuple[str, bytes]]:
    host = server.url.removeprefix("http://")
    return [(e.event_id, e.http_request(server.path, host)) for e in events]


def hello_requests(server: WebhookServer, n: int) -> list[tuple[str, bytes]]:
    host = server.url.removeprefix("http://")
    request = f"GET /bench/hello HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return [("hello", request)] * n


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- what the database holds afterwards ------------------------------------------------------


def stored_copies(database_url: str, integration_id: str) -> tuple[dict[str, int], int]:
    """Copies of each provider event id stored for the integration, and its process jobs."""
    from clinicbridge.db.engine import normalize_url

    engine = sa.create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, provider_event_id FROM webhook_events WHERE integration_id = :i"
                ),
                {"i": integration_id},
            ).all()
            keys = conn.execute(
                sa.text("SELECT dedupe_key FROM jobs WHERE kind = 'webhooks.process'")
            ).scalars()
            job_keys = Counter(keys)
    finally:
        engine.dispose()
    copies = Counter(r.provider_event_id for r in rows)
    return dict(copies), sum(job_keys[f"whe:{r.id}"] for r in rows)


def drain(database_url: str, *, timeout: float = 180.0) -> float:
    """Wait until no processing job is left to run; the seconds it took."""
    from clinicbridge.db.engine import normalize_url

    engine = sa.create_engine(normalize_url(database_url))
    started = time.monotonic()
    try:
        while True:
            with engine.connect() as conn:
                left = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM jobs WHERE kind = 'webhooks.process'"
                        " AND state IN ('pending', 'running', 'failed')"
                    )
                ).scalar_one()
            if not left:
                return round(time.monotonic() - started, 1)
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{left} processing jobs still to run after {timeout} s")
            time.sleep(0.2)
    finally:
        engine.dispose()


def _main() -> None:
    import uvicorn

    from clinicbridge.app import create_app
    from clinicbridge.core.logs import configure_logging
    from clinicbridge.settings import load_settings

    settings = load_settings(port=int(sys.argv[1]))
    configure_logging(settings.log_level)
    app = create_app(settings, embedded_worker="--no-worker" not in sys.argv[2:])

    @app.get("/bench/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    uvicorn.run(app, host="127.0.0.1", port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    _main()
