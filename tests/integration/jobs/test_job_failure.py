"""A job that fails on a real worker: the reason names what to fix, and a retry after the fix
succeeds.

The teacher's weights are installed when the job is submitted (so submit accepts it) and gone
by the time a worker picks it up, as when someone tidies the weights dir of a shared cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
from safetensors.torch import save_file
from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.students.models import Artifact
from tests.integration.jobs.conftest import Deployment, all_exited

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_missing_teacher_weights_fail_the_job_naming_the_file_then_retry_succeeds(
    deployment: Deployment, tmp_path: Path
) -> None:
    weights_dir = get_settings().weights_dir
    assert weights_dir is not None
    weights_dir.mkdir(parents=True, exist_ok=True)
    installed = weights_dir / "resnet18.safetensors"  # serves the teacher and the student
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), installed)
    job_id = deployment.submit(epochs=1, method="ekd", random_weights=False).json()["id"]
    aside = tmp_path / "aside.safetensors"
    installed.rename(aside)

    worker = deployment.start_worker()
    job = deployment.wait_terminal(job_id, timeout_s=180)

    assert job["status"] == "failed", job
    assert job["failure_code"] == "weights_not_found"
    assert str(installed) in job["failure_reason"]
    # Not retried on its own: the file will not come back by itself.
    assert (job["attempt"], job["checkpoint_epoch"]) == (1, None)
    events = deployment.events(job_id)
    last = events[-1]
    assert (last["kind"], last["data"]["to"], last["data"]["code"]) == (
        "state",
        "failed",
        "weights_not_found",
    )
    assert not [e for e in events if e["kind"] == "epoch"], "it must fail before training"
    with get_sessionmaker()() as session:
        assert not session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
    assert all_exited(worker.trainers()), "the failed trainer must exit and free its device"
    assert deployment.post(f"/{job_id}/cancel").status_code == 409

    aside.rename(installed)
    retried = deployment.post(f"/{job_id}/retry")
    assert retried.status_code == 201, retried.text
    done = deployment.wait_terminal(retried.json()["id"], timeout_s=240)
    assert done["status"] == "succeeded", done
    assert (done["retry_of"], done["attempt"], done["failure_code"]) == (job_id, 1, None)
