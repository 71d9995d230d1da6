"""Job priorities as the production broker (Redis) honours them: high first, low last."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from app.core.config import Settings
from app.core.queue import TaskName, make_celery
from app.jobs.schemas import CELERY_PRIORITY, Priority

pytestmark = pytest.mark.integration


def test_redis_delivers_high_priority_jobs_before_normal_and_low(
    redis_url: str, tmp_path: Path
) -> None:
    celery = make_celery(
        Settings(data_dir=tmp_path, broker_url=redis_url, result_backend=redis_url)
    )
    queue = f"priority-test-{secrets.token_hex(4)}"  # the real gpu queue may hold other tests' jobs
    for priority in (Priority.low, Priority.normal, Priority.high):
        celery.send_task(
            TaskName.run_job.value,
            args=[priority.value],
            queue=queue,
            priority=CELERY_PRIORITY[priority],
        )
    delivered = []
    with celery.connection_for_read() as connection:
        inbox = connection.SimpleQueue(queue)
        try:
            for _ in range(3):
                message = inbox.get(timeout=5)
                delivered.append(message.decode()[0][0])
                message.ack()
        finally:
            inbox.queue.delete()
            inbox.close()
    assert delivered == ["high", "normal", "low"]
