"""procrastinate and pgqueuer, set up as their documentation recommends, for jobs_postgres.py.

Imported for schema set-up and bulk enqueueing; ``main`` runs a worker process (arguments:
``{procrastinate|pgqueuer} URL CONCURRENCY``). Needs the ``bench`` extra:
``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

PROCRASTINATE_TASK = "bench_noop"
PGQUEUER_ENTRYPOINT = "bench_noop"


def _procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name=PROCRASTINATE_TASK)
    async def noop() -> None:
        """Does nothing."""

    return app


async def procrastinate_setup(url: str) -> None:
    async with _procrastinate_app(url).open_async() as app:
        await app.schema_manager.apply_schema_async()


async def procrastinate_enqueue(url: str, jobs: int, batch: int) -> None:
    """``batch_defer_async``: one statement per batch."""
    async with _procrastinate_app(url).open_async() as app:
        task = app.tasks[PROCRASTINATE_TASK]
        for start in range(0, jobs, batch):
            await task.batch_defer_async(*({} for _ in range(min(batch, jobs - start))))


async def _procrastinate_worker(url: str, concurrency: int) -> None:
    async with _procrastinate_app(url).open_async() as app:
        # procrastinate installs its own SIGTERM/SIGINT handlers: graceful stop
        await app.run_worker_async(concurrency=concurrency, wait=True)


async def _asyncpg_queries(url: str) -> tuple[Any, Any]:
    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(url)
    return conn, Queries(AsyncpgDriver(conn))


async def pgqueuer_setup(url: str) -> None:
    conn, queries = await _asyncpg_queries(url)
    await queries.install()
    await conn.close()


async def pgqueuer_enqueue(url: str, jobs: int, batch: int) -> None:
    """``Queries.enqueue`` with lists: one statement per batch."""
    conn, queries = await _asyncpg_queries(url)
    for start in range(0, jobs, batch):
        n = min(batch, jobs - start)
        await queries.enqueue([PGQUEUER_ENTRYPOINT] * n, [None] * n, [0] * n)
    await conn.close()


async def _pgqueuer_worker(url: str, _concurrency: int) -> None:
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.models import Job

    pgq = PgQueuer.from_asyncpg_connection(await asyncpg.connect(url))

    @pgq.entrypoint(PGQUEUER_ENTRYPOINT)
    async def noop(job: Job) -> None:
        """Does nothing."""

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pgq.shutdown.set)
    await pgq.run()  # what `pgq run` does, with its defaults: batches of 10


WORKERS = {"procrastinate": _procrastinate_worker, "pgqueuer": _pgqueuer_worker}


def main(argv: list[str]) -> None:
    """A worker process: LIBRARY URL CONCURRENCY."""
    library, url, concurrency = argv[0], argv[1], int(argv[2])
    asyncio.run(WORKERS[library](url, concurrency))


if __name__ == "__main__":
    main(sys.argv[1:])
