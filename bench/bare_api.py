"""The baseline of ``bench.api_load``: a bare FastAPI app answering one primary-key select from
the service's own database, with no auth lookup, no middleware and no response model. Started
by the benchmark as ``uvicorn bench.bare_api:app`` with the same ``FOPRO_DATABASE_URL``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import make_engine
from app.jobs.models import Job

engine = make_engine(get_settings().database_url)
app = FastAPI()


@app.get("/bare/jobs/{job_id}")
def get_job(job_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            select(Job.id, Job.status, Job.progress, Job.created_at).where(Job.id == job_id)
        ).one_or_none()
    if row is None:
        raise HTTPException(404)
    return {"id": row.id, "status": row.status, "progress": row.progress, "at": row.created_at}
