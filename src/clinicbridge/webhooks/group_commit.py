"""Group commit: many callers' writes in one transaction, made by one thread.

On SQLite every write transaction holds the database's single write lock, and
writers that find it taken sleep in the busy handler; a commit per request caps
the inbox at a few hundred requests a second. Here callers ``submit`` an item
and get a future; one committer thread takes everything queued (up to
``max_batch``), writes it with ``write(session, items)`` in one transaction, and
resolves each caller's future only after the commit. While one batch commits
the next one gathers, so batches grow with load; ``linger_seconds`` (a few
milliseconds at most) also holds a batch open for more items, counted from its
oldest item's arrival, which halves the commits at moderate load.

A failed batch does not fail its neighbours: when the error may come from one
item's data (an integrity error, say), each item is retried alone and only the
guilty ones get the exception. An error of the database itself (locked, gone)
fails the whole batch at once rather than retrying every item into it. The
thread starts with the first item and ends after ``idle_seconds`` without work,
so a committer needs no shutdown; ``close`` refuses new items.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.db.engine import Database

log = logging.getLogger("clinicbridge.group_commit")
T = TypeVar("T")
R = TypeVar("R")
# Errors of the database rather than of an item: retrying items alone would only
# meet them again, once per item.
_WHOLE_BATCH_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)


class GroupCommitter(Generic[T, R]):
    """Writes submitted items in shared transactions; one result (or error) per item.

    ``write(session, items)`` runs inside ``db.write()`` and returns one result per
    item, in order; an exception instance as an item's result is raised to that
    item's caller alone, and the transaction still commits for the others. It
    must be safe to run again on some of the same items after a rollback
    (nothing it did survives one).
    """

    def __init__(
        self,
        db: Database,
        write: Callable[[Session, Sequence[T]], Sequence[R | Exception]],
        *,
        name: str = "group-commit",
        max_batch: int = 256,
        linger_seconds: float = 0.0,
        idle_seconds: float = 2.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.db, self.write, self.name = db, write, name
        self.max_batch, self.linger, self.idle_seconds = max_batch, linger_seconds, idle_seconds
        self._queue: deque[tuple[T, Future[R], float]] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._running = False
        self._closed = False
        self.batches = 0  # committed transactions, for tests and curiosity
        self.items = 0

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the future resolves after the transaction holding it commits.

        Cancelling the future before its batch starts keeps the item from being
        written; once the batch has started, cancelling does nothing.
        """
        future: Future[R] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._queue.append((item, future, time.monotonic()))
            if self._running:
                # the committer waits for a first item, or lingers for a full batch
                if len(self._queue) in (1, self.max_batch):
                    self._ready.notify()
            else:
                self._running = True
                threading.Thread(target=self._run, name=self.name, daemon=True).start()
        return future

    def close(self) -> None:
        """Refuse new items; what is queued is still written."""
        with self._lock:
            self._closed = True

    def _run(self) -> None:
        batch: list[tuple[T, Future[R]]] = []
        try:
            while True:
                with self._lock:
                    while not self._queue:
                        self._ready.wait(self.idle_seconds)
                        if not self._queue:  # idle (or woken with nothing to do): end
                            self._running = False
                            return
                    # Linger (if asked) until a full batch, or until the oldest item
                    # has waited ``linger`` seconds, commits included.
                    deadline = self._queue[0][2] + self.linger
                    while len(self._queue) < self.max_batch:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._ready.wait(left)
                    taken = [
                        self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))
                    ]
                # A caller that gave up before its batch started is not written.
                batch = [(item, f) for item, f, _ in taken if f.set_running_or_notify_cancel()]
                if batch:
                    self._commit(batch)
                batch = []
        except BaseException as exc:  # not even Exception (see _commit): hand over, re-raise
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            with self._lock:
                self._running = bool(self._queue)
                if self._running:
                    threading.Thread(target=self._run, name=self.name, daemon=True).start()
            raise

    def _commit(self, batch: list[tuple[T, Future[R]]]) -> None:
        try:
            results = self._transaction([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, _WHOLE_BATCH_ERRORS):
                log.warning(
                    "group commit failed",
                    extra={"fields": {"error_class": type(exc).__name__, "items": len(batch)}},
                )
                for _, future in batch:
                    future.set_exception(exc)
                return
            for one in batch:  # find the item(s) at fault; the others still get written
                self._commit([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _transaction(self, items: list[T]) -> Sequence[R | Exception]:
        with self.db.write() as session:
            results = self.write(session, items)
            if len(results) != len(items):  # before the commit: a bug, not a half-answer
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        self.batches += 1
        self.items += len(items)
        return results
