"""Every table, imported in one place so ``Base.metadata`` is complete for Alembic and tests."""

from app.audit.models import AuditRecord
from app.core.db import Base
from app.datasets.models import Dataset, DatasetEvent, DatasetStatus
from app.jobs.models import Job, JobEvent, JobStatus
from app.students.models import Artifact
from app.teachers.models import Teacher
from app.teams.models import ApiKey, Role, Team

__all__ = [
    "ApiKey",
    "Artifact",
    "AuditRecord",
    "Base",
    "Dataset",
    "DatasetEvent",
    "DatasetStatus",
    "Job",
    "JobEvent",
    "JobStatus",
    "Role",
    "Teacher",
    "Team",
]
