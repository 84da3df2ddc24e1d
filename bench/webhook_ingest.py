"""Webhook ingest (POST /webhooks/{id}, Stripe-signed) vs hello world on the same server.

One server process on a fresh database (SQLite by default; ``--database-url`` names
a PostgreSQL server, on which a throwaway database is created; ``postgresql``
alone means ``$CLINICBRIDGE_TEST_DATABASE_URL``, as scripts/with-postgres.sh sets).

1. Peak: wrk, closed loop, interleaved rounds of hello world and of distinct
   signed events; the ratio is the median of the per-round ratios of accepted
   webhooks/s to hello-world requests/s. Target: at least 0.5.
2. Latency: an open-loop sender at half the peak rate. Target: p99 <= 25 ms.
3. Integrity: every event answered 2xx is stored exactly once, with exactly one
   processing job; nothing unanswered is stored twice.

By default the server runs without its embedded worker, so that the measurement
is the inbox alone and the hello-world rounds do not pay for processing the
previous round's events. With ``--embedded-worker`` the worker processes the
events in the same process, and each phase starts once the backlog the previous
one left is processed (the seconds that took are reported). Prints one JSON
object; exits 0 when every target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from typing import Any

from _harness import wrk
from _webhooks import (
    Sent,
    SignedEvent,
    drain,
    hello_requests,
    open_loop,
    percentile,
    signed_events,
    stored_copies,
    webhook_requests,
    webhook_server,
    wrk_webhooks,
)

TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0


def _round_check(events: list[SignedEvent], run: dict[str, float], copies: dict[str, int]) -> str:
    """What is wrong with one wrk round's events in the database ('' if nothing)."""
    if run["wrapped"]:
        return "wrk ran out of distinct events"
    sent = {e.event_id for e in events[: int(run["sent"])]}
    stored = [e.event_id for e in events if e.event_id in copies]
    if any(e not in sent for e in stored):
        return "an event never sent is stored"
    # Every 2xx said "received": 1; at most the requests in flight when wrk stopped
    # were stored without their answer being counted.
    if not run["accepted"] <= len(stored) <= run["sent"]:
        return f"{len(stored)} stored, {run['accepted']} accepted, {run['sent']} sent"
    return ""


def _open_loop_check(results: list[Sent], copies: dict[str, int]) -> str:
    answered = [r for r in results if 200 <= r.status < 300]
    missing = [r.key for r in answered if copies.get(r.key) != 1]
    if missing:
        return f"{len(missing)} events answered 2xx are not stored exactly once"
    if sum(r.accepted for r in answered) != len(answered):
        return "an event sent once was reported as a duplicate"
    return ""


def _latency(results: list[Sent]) -> dict[str, float]:
    ok = [r.latency_ms for r in results if 200 <= r.status < 300]
    return {
        "non_2xx": len(results) - len(ok),
        "p50_ms": round(percentile(ok, 50), 2),
        "p99_ms": round(percentile(ok, 99), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=4, help="per route and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--fixed-seconds", type=int, default=10, help="the open-loop run")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server's URL")
    parser.add_argument("--embedded-worker", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    pg_url = args.database_url
    if pg_url == "postgresql":
        pg_url = os.environ.get("CLINICBRIDGE_TEST_DATABASE_URL")
        if not pg_url:
            print("CLINICBRIDGE_TEST_DATABASE_URL is not set", file=sys.stderr)
            return 2
    c, s = args.connections, args.seconds
    with webhook_server(pg_url, embedded_worker=args.embedded_worker) as server:
        hello_url = f"{server.url}/bench/hello"
        # warm both paths (imports, pools, caches) and size the event sets
        wrk(hello_url, seconds=2, connections=c)
        warm = wrk_webhooks(server, signed_events(20_000, "warm"), seconds=2, connections=c)
        per_round = max(20_000, int(warm["requests_per_s"] * s * 3))
        rounds: list[dict[str, Any]] = []
        sent_events: list[list[SignedEvent]] = []
        drained: list[float] = []

        def settle() -> None:  # with the worker: let it catch up before measuring again
            if args.embedded_worker:
                drained.append(drain(server.database_url))

        for r in range(args.rounds):
            settle()
            hello = wrk(hello_url, seconds=s, connections=c)
            events = signed_events(per_round, f"r{r}")
            hook = wrk_webhooks(server, events, seconds=s, connections=c)
            answered = max(1, hook["ok"] + hook["bad"])
            accepted_per_s = round(hook["requests_per_s"] * hook["accepted"] / answered, 1)
            sent_events.append(events)
            rounds.append(
                {
                    "hello_world": hello,
                    "webhooks": {"accepted_per_s": accepted_per_s, **hook},
                    "ratio": round(accepted_per_s / hello["requests_per_s"], 3),
                }
            )
        ratio = statistics.median(r["ratio"] for r in rounds)
        median = min(rounds, key=lambda r: abs(r["ratio"] - ratio))
        peak = statistics.median(r["webhooks"]["accepted_per_s"] for r in rounds)
        rate = peak / 2
        n = int(rate * args.fixed_seconds)
        settle()
        # the control: hello world at the same rate, same sender, same server
        control = open_loop(server, hello_requests(server, n), rate=rate)
        fixed_events = signed_events(n, "fixed")
        started = time.monotonic()
        results = open_loop(server, webhook_requests(server, fixed_events), rate=rate)
        elapsed = time.monotonic() - started
        statuses = Counter(r.status for r in results)
        latencies = [r.latency_ms for r in results if 200 <= r.status < 300]
        time.sleep(0.5)
        settle()
        copies, jobs = stored_copies(server.database_url, server.integration_id)
    problems = [
        f"round {i}: {p}"
        for i, (events, r) in enumerate(zip(sent_events, rounds, strict=True))
        if (p := _round_check(events, r["webhooks"], copies))
    ]
    if p := _open_loop_check(results, copies):
        problems.append(f"fixed rate: {p}")
    if any(count != 1 for count in copies.values()):
        problems.append("an event is stored more than once")
    if jobs != len(copies):
        problems.append(f"{len(copies)} events stored but {jobs} processing jobs")
    non_2xx = sum(n for status, n in statuses.items() if not 200 <= status < 300)
    non_2xx += sum(int(r["webhooks"]["bad"] + r["webhooks"]["errors"]) for r in rounds)
    p99 = round(percentile(latencies, 99), 2)
    result = {
        "benchmark": "webhook_ingest",
        "database": "postgresql" if pg_url else "sqlite",
        "embedded_worker": args.embedded_worker,
        "backlog_drain_seconds": drained,
        "seconds_per_round": s,
        "connections": c,
        "median_round": {
            "hello_world": median["hello_world"],
            "webhooks": median["webhooks"],
        },
        "round_ratios": [r["ratio"] for r in rounds],
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "peak_accepted_per_s": peak,
        "fixed_rate": {
            "rate_per_s": round(rate, 1),
            "sent": len(results),
            "achieved_per_s": round(len(results) / elapsed, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "no_answer": dict(Counter(r.error for r in results if r.error)),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": p99,
            "max_ms": round(max(latencies, default=float("nan")), 2),
            "hello_world_control": _latency(control),
        },
        "target_p99_ms": TARGET_P99_MS,
        "integrity": {
            "events_stored": len(copies),
            "stored_more_than_once": sum(1 for n in copies.values() if n > 1),
            "processing_jobs": jobs,
            "problems": problems,
        },
        "pass": ratio >= TARGET_RATIO and p99 <= TARGET_P99_MS and not problems and non_2xx == 0,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
