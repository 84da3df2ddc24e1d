"""Authenticated read (GET /api/v1/tenant: API key lookup + DB read) vs hello world.

Both run on the same server process in the same run, interleaved over several
rounds so that noise from other work on the machine hits both alike; the ratio
is the median of the per-round ratios. Target: at least 0.6 on SQLite. Also
reports the server's resident memory when idle. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time

from _harness import running_server, wrk

TARGET_RATIO = 0.6
TARGET_IDLE_RSS_MB = 120


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=4, help="per route and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    with running_server(args.database_url) as server:
        time.sleep(1.0)
        idle_rss = server.rss_mb()
        auth = {"Authorization": f"Bearer {server.api_key}"}
        # warm both paths (imports, pools, caches) before measuring
        wrk(f"{server.url}/bench/hello", seconds=2, connections=args.connections)
        wrk(f"{server.url}/api/v1/tenant", seconds=2, connections=args.connections, headers=auth)
        rounds = []
        for _ in range(args.rounds):
            hello = wrk(
                f"{server.url}/bench/hello", seconds=args.seconds, connections=args.connections
            )
            tenant = wrk(
                f"{server.url}/api/v1/tenant",
                seconds=args.seconds,
                connections=args.connections,
                headers=auth,
            )
            rounds.append(
                {
                    "hello_world": hello,
                    "get_tenant": tenant,
                    "ratio": round(tenant["requests_per_s"] / hello["requests_per_s"], 3),
                }
            )
        time.sleep(1.0)
        after_rss = server.rss_mb()
    ratio = statistics.median(r["ratio"] for r in rounds)
    hello = min(rounds, key=lambda r: abs(r["ratio"] - ratio))["hello_world"]
    tenant = min(rounds, key=lambda r: abs(r["ratio"] - ratio))["get_tenant"]
    result = {
        "benchmark": "http_baseline",
        "database": "postgresql" if args.database_url else "sqlite",
        "seconds_per_round": args.seconds,
        "connections": args.connections,
        "median_round": {"hello_world": hello, "get_tenant": tenant},
        "round_ratios": [r["ratio"] for r in rounds],
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "idle_rss_mb": idle_rss,
        "rss_after_load_mb": after_rss,
        "target_idle_rss_mb": TARGET_IDLE_RSS_MB,
        "pass": ratio >= TARGET_RATIO
        and idle_rss <= TARGET_IDLE_RSS_MB
        and all(r["get_tenant"]["non_2xx"] == 0 for r in rounds),
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
