"""Imports every module that defines tables, so ``Base.metadata`` is complete."""

from clinicbridge.core import models as core_models
from clinicbridge.jobs import models as jobs_models

__all__ = ["core_models", "jobs_models"]
