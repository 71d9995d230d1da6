from __future__ import annotations

from pathlib import Path

from app.core.config import Settings
from app.core.queue import Queue, TaskName, make_celery


def test_training_goes_to_the_gpu_queue_and_everything_else_to_cpu(tmp_path: Path) -> None:
    celery = make_celery(Settings(data_dir=tmp_path))
    routes = celery.conf.task_routes
    assert routes[TaskName.run_job.value] == {"queue": Queue.gpu}
    for task in (TaskName.validate_dataset, TaskName.reap_jobs, TaskName.ping):
        assert routes[task.value] == {"queue": Queue.cpu}
    assert {q.name for q in celery.conf.task_queues} == {"cpu", "gpu"}


def test_workers_take_one_task_at_a_time_and_speak_only_json(tmp_path: Path) -> None:
    celery = make_celery(Settings(data_dir=tmp_path))
    assert celery.conf.worker_prefetch_multiplier == 1
    assert celery.conf.accept_content == ["json"]
    assert celery.conf.task_serializer == "json"
    assert celery.conf.broker_url.startswith("sqla+sqlite:///")
