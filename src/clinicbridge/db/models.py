"""Imports every module that defines tables, so ``Base.metadata`` is complete."""

from clinicbridge.audit import models as audit_models
from clinicbridge.calendars import models as calendar_models
from clinicbridge.core import models as core_models
from clinicbridge.http import models as http_models
from clinicbridge.integrations import models as integration_models
from clinicbridge.jobs import models as jobs_models
from clinicbridge.messaging import conversation_models, push_models, reminder_models
from clinicbridge.messaging import models as messaging_models
from clinicbridge.patients import models as patient_models
from clinicbridge.payments import connect_models, membership_models
from clinicbridge.payments import models as payment_models
from clinicbridge.scheduling import models as scheduling_models
from clinicbridge.tasks import models as task_models
from clinicbridge.vault import models as vault_models
from clinicbridge.video import models as video_models
from clinicbridge.voice import models as voice_models
from clinicbridge.webhooks import models as webhook_models

__all__ = [
    "audit_models",
    "calendar_models",
    "connect_models",
    "conversation_models",
    "core_models",
    "http_models",
    "integration_models",
    "jobs_models",
    "membership_models",
    "messaging_models",
    "patient_models",
    "payment_models",
    "push_models",
    "reminder_models",
    "scheduling_models",
    "task_models",
    "vault_models",
    "video_models",
    "voice_models",
    "webhook_models",
]
