"""``clinicbridge serve`` for tests/e2e/test_webhook_durability.py.

``python -m tests.webhook_serve serve --port P``: the real CLI, with the test's
webhook handler registered and the embedded worker's job lease shortened from
30 s to ``CLINICBRIDGE_TEST_LEASE_SECONDS`` (default 3), so that jobs held by a
killed server are run again within seconds rather than half a minute.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial

import clinicbridge.app
from clinicbridge.cli import main
from clinicbridge.jobs.worker import WorkerConfig
from tests.webhook_marks import register

if __name__ == "__main__":
    register()
    lease = timedelta(seconds=float(os.environ.get("CLINICBRIDGE_TEST_LEASE_SECONDS", "3")))
    clinicbridge.app.WorkerConfig = partial(WorkerConfig, lease=lease)  # type: ignore[misc]
    main()
