"""The job system as Prometheus sees it, read from the database and the broker at scrape time.

Jobs by state, queue depth per Celery queue, and per running job: heartbeat age, lease time
left, training images/s (its latest progress row) and its last epoch's seconds (its newest epoch
event); datasets being validated. These describe the whole deployment, so every API process and
replica reports the same values: one scrape target is enough.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import get_sessionmaker, utcnow
from app.core.queue import queue_depths
from app.datasets.models import Dataset, DatasetStatus
from app.jobs.models import Job, JobEvent, JobStatus
from app.jobs.state import EventKind

log = logging.getLogger("fopro.metrics")


class JobSystemCollector(Collector):
    """Collects at scrape time. A source that does not answer shows as
    ``fopro_metrics_source_up{source}`` 0, its series left out, instead of failing the scrape."""

    def describe(self) -> Iterator[Metric]:
        # Without it the registry would call ``collect`` (the DB and the broker) on register.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "fopro_metrics_source_up",
            "1 when the source answered during this scrape, else 0.",
            labels=["source"],
        )
        for source, read in (("database", _from_database), ("broker", _from_broker)):
            try:
                families = list(read())
            except Exception:  # an outage shows as source_up 0; /readyz says why
                log.warning("metrics: reading the %s failed", source, exc_info=True)
                up.add_metric([source], 0.0)
                continue
            up.add_metric([source], 1.0)
            yield from families
        yield up


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def _from_database() -> Iterable[Metric]:
    now = utcnow()
    by_state = GaugeMetricFamily("fopro_jobs", "Jobs by state.", labels=["state"])
    heartbeat = GaugeMetricFamily(
        "fopro_job_heartbeat_age_seconds",
        "Seconds since the worker holding a running job last heart-beat.",
        labels=["job_id", "lease_owner"],
    )
    lease = GaugeMetricFamily(
        "fopro_job_lease_remaining_seconds",
        "Seconds until a running job's lease expires (negative: expired, not reaped yet).",
        labels=["job_id", "lease_owner"],
    )
    images_per_s = GaugeMetricFamily(
        "fopro_job_training_images_per_second",
        "Training throughput of a running job, from its latest progress.",
        labels=["job_id"],
    )
    epoch_s = GaugeMetricFamily(
        "fopro_job_epoch_seconds",
        "Wall-clock seconds of a running job's last finished epoch.",
        labels=["job_id"],
    )
    validating = GaugeMetricFamily(
        "fopro_datasets_validating", "Datasets whose validation is in progress."
    )
    with get_sessionmaker()() as session:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        running = session.execute(
            select(
                Job.id, Job.lease_owner, Job.heartbeat_at, Job.lease_expires_at, Job.progress
            ).where(Job.status == JobStatus.running.value)
        ).all()
        last_epoch = _last_epoch_seconds(session, [row.id for row in running])
        in_validation = session.scalar(
            select(func.count())
            .select_from(Dataset)
            .where(Dataset.status == DatasetStatus.validating.value)
        )
    for state in JobStatus:
        by_state.add_metric([state.value], float(counts.get(state.value, 0)))
    for row in running:
        owner = row.lease_owner or ""
        if row.heartbeat_at is not None:
            heartbeat.add_metric([row.id, owner], _seconds(now, row.heartbeat_at))
        if row.lease_expires_at is not None:
            lease.add_metric([row.id, owner], _seconds(row.lease_expires_at, now))
        rate = (row.progress or {}).get("images_per_s")
        if isinstance(rate, int | float):
            images_per_s.add_metric([row.id], float(rate))
        if row.id in last_epoch:
            epoch_s.add_metric([row.id], last_epoch[row.id])
    validating.add_metric([], float(in_validation or 0))
    return [by_state, heartbeat, lease, images_per_s, epoch_s, validating]


def _last_epoch_seconds(session: Session, job_ids: list[str]) -> dict[str, float]:
    """``{job id: seconds}`` of each job's newest epoch event, in one query for all jobs."""
    if not job_ids:
        return {}
    newest = (
        select(func.max(JobEvent.id))
        .where(JobEvent.job_id.in_(job_ids), JobEvent.kind == EventKind.epoch.value)
        .group_by(JobEvent.job_id)
    )
    seconds: dict[str, float] = {}
    for job_id, data in session.execute(
        select(JobEvent.job_id, JobEvent.data).where(JobEvent.id.in_(newest))
    ):
        value = (data or {}).get("seconds")
        if isinstance(value, int | float):
            seconds[job_id] = float(value)
    return seconds


def _from_broker() -> Iterable[Metric]:
    depth = GaugeMetricFamily(
        "fopro_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
    )
    for queue, count in queue_depths().items():
        depth.add_metric([queue.value], float(count))
    return [depth]


JOB_SYSTEM = JobSystemCollector()
# Imported once per process (by app.main), so registered once.
REGISTRY.register(JOB_SYSTEM)
