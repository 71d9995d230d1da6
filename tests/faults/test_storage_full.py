"""The local object store out of space while a job writes its checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.conftest import METHOD, Deploy
from tests.unit.jobs.ready_dataset import auth

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_full_store_fails_the_job_as_storage_full_keeping_nothing_partial(
    deploy: Deploy, tmp_path: Path
) -> None:
    # The worker's store refuses any write that would leave less than twice today's free space:
    # full, as far as it is concerned. The API (and the dataset it stored) is unaffected.
    probe = os.statvfs(tmp_path)
    floor = 2 * probe.f_bavail * probe.f_frsize + 1
    deployment = deploy(embedded=True, worker_settings={"local_store_min_free_bytes": str(floor)})
    deployment.start_worker()
    job_id = deployment.submit(epochs=3, method=METHOD).json()["id"]

    job = deployment.wait_terminal(job_id, timeout_s=180)

    assert (job["status"], job["failure_code"]) == ("failed", "storage_full"), job
    assert "The object store is full" in job["failure_reason"]
    assert "FOPRO_LOCAL_STORE_MIN_FREE_BYTES" in job["failure_reason"]
    assert job["checkpoint_epoch"] is None
    # Nothing of the job, not even a partial upload, is in the store; the dataset still is.
    keys = [o.key for o in deployment.store.list("")]
    assert any("/datasets/" in key for key in keys)
    assert [key for key in keys if f"/jobs/{job_id}/" in key] == []
    store_root = deployment.store.root  # type: ignore[attr-defined]
    assert list((store_root / ".tmp").glob("put-*")) == []
    # The API keeps serving.
    assert deployment.client.get("/readyz").status_code == 200
    listed = deployment.client.get("/v1/jobs?limit=5", headers=auth(deployment.key))
    assert listed.status_code == 200
    assert listed.json()["items"][0]["id"] == job_id
