"""The sync job: rounds until current, conflicts with bookings checked, then push
started or renewed where it is due.

Here rather than in ``sync`` so that ``push`` (which queues syncs) and ``sync`` do not
import each other.
"""

from __future__ import annotations

from clinicbridge.calendars import conflicts, push
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.sync import SYNC_KIND, sync_until_current
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.vault.shared import shared_vault


@registry.handler(SYNC_KIND)
def run_sync(job: JobContext) -> None:
    if job.settings is None:
        raise RuntimeError("the calendar sync job needs the service settings (master key file)")
    vault = shared_vault(job.db, job.settings.master_key_file)
    connection_id = str(job.payload["connection_id"])
    result = sync_until_current(job.db, vault, connection_id, job_id=job.job_id)
    if result.status != "synced":
        return
    with job.db.read() as session:
        row = session.get(CalendarConnection, connection_id)
    if row is not None:
        conflicts.check_provider(job.db, row.tenant_id, row.provider_id, job.now())
    push.ensure_push(job.db, vault, connection_id, job.settings.public_base_url)
