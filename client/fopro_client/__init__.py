"""Python client for the FoPro-KD Service: upload datasets, run distillation jobs, watch them
live, download and query the distilled students.

Depends on httpx and pydantic only (no torch, no server code), so it installs on any laptop::

    from fopro_client import FoproClient

    with FoproClient("http://127.0.0.1:8000", "fpk_...") as fopro:
        dataset = fopro.wait_ready(fopro.upload_dataset("derm.zip", progress=True).id)
        job = fopro.submit_job(dataset.id, teacher="resnet50", student="resnet18")
        for update in fopro.watch(job.id):
            print(update)
        fopro.download_artifacts(job.id, "student/")

The command line on top of it is ``fopro_client.cli`` (the ``[cli]`` extra).
"""

from fopro_client.client import FoproClient
from fopro_client.config import Connection, resolve_connection
from fopro_client.errors import (
    AuthError,
    Conflict,
    ConnectionFailed,
    DatasetInvalid,
    DownloadMismatch,
    FoproError,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from fopro_client.models import (
    Artifact,
    Dataset,
    DatasetStatus,
    Event,
    Job,
    JobMetrics,
    JobProgress,
    JobStatus,
    JobUpdate,
    Me,
    Page,
    Predictions,
    Problem,
    StreamEnd,
    TeacherCatalog,
    TeamTeacher,
    ZooTeacher,
)
from fopro_client.retry import RetryPolicy

__all__ = [
    "Artifact",
    "AuthError",
    "Conflict",
    "Connection",
    "ConnectionFailed",
    "Dataset",
    "DatasetInvalid",
    "DatasetStatus",
    "DownloadMismatch",
    "Event",
    "FoproClient",
    "FoproError",
    "Forbidden",
    "Job",
    "JobMetrics",
    "JobProgress",
    "JobStatus",
    "JobUpdate",
    "Me",
    "NotFound",
    "Page",
    "Predictions",
    "Problem",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "StreamEnd",
    "TeacherCatalog",
    "TeamTeacher",
    "ValidationFailed",
    "ZooTeacher",
    "resolve_connection",
]
