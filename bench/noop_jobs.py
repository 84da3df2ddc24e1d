"""Job handlers for the queue benchmarks: ``--import bench.noop_jobs`` on a worker."""

from __future__ import annotations

import time

from clinicbridge.jobs.registry import JobContext, registry

NOOP = "bench.noop"
STAMP = "bench.stamp"


def noop(job: JobContext) -> None:
    """Does nothing: what is measured is the queue's own cost per job."""


def stamp(job: JobContext) -> None:
    """Append ``"<i> <time.monotonic()>"`` to ``payload["file"]`` as the handler starts.

    CLOCK_MONOTONIC is one clock for every process of the machine, so the enqueuing
    process can subtract its own reading taken at commit.
    """
    started = time.monotonic()
    with open(job.payload["file"], "a") as out:
        out.write(f"{job.payload['i']} {started}\n")


registry.register(NOOP, noop)
registry.register(STAMP, stamp)
