"""Artifact downloads on both deployments: whole, ranged, and a key-less redirect (presigned on
S3, the API's own signed link on the local store)."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest

from app.core.db import get_sessionmaker
from app.datasets.models import Dataset
from app.jobs.models import Job, JobStatus
from app.students.service import upload_artifact
from tests.integration.jobs.conftest import Deployment
from tests.unit.jobs.ready_dataset import auth

pytestmark = pytest.mark.integration


@pytest.fixture
def job_with_artifacts(deployment: Deployment, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """A succeeded job with two artifacts uploaded as the worker uploads them."""
    files = {
        "student.onnx": bytes(range(256)) * 4096,  # 1 MiB of binary
        "model_card.md": b"# Model card\n\nbalanced accuracy 0.8123\n",
    }
    with get_sessionmaker()() as session:
        dataset = session.get_one(Dataset, deployment.dataset_id)
        job = Job(
            team_id=dataset.team_id,
            dataset_id=dataset.id,
            teacher="resnet18",
            student="resnet18",
            method="ekd",
            status=JobStatus.succeeded.value,
        )
        session.add(job)
        session.flush()
        for name, data in files.items():
            path = tmp_path / name
            path.write_bytes(data)
            session.add(
                upload_artifact(deployment.store, team_id=job.team_id, job_id=job.id, path=path)
            )
        session.commit()
        return job.id, files


def test_downloads_whole_ranged_and_redirected(
    deployment: Deployment, job_with_artifacts: tuple[str, dict[str, bytes]]
) -> None:
    job_id, files = job_with_artifacts
    headers = auth(deployment.key)
    rows = deployment.client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()
    assert {r["name"]: r["sha256"] for r in rows} == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items()
    }
    onnx_url = f"/v1/jobs/{job_id}/artifacts/student.onnx"

    whole = deployment.client.get(onnx_url, headers=headers)
    assert whole.status_code == 200
    assert whole.content == files["student.onnx"]

    ranged = deployment.client.get(onnx_url, headers={**headers, "Range": "bytes=1000-1999"})
    assert ranged.status_code == 206
    assert ranged.content == files["student.onnx"][1000:2000]
    assert ranged.headers["content-range"] == f"bytes 1000-1999/{len(files['student.onnx'])}"
    past_end = deployment.client.get(onnx_url, headers={**headers, "Range": "bytes=2000000-"})
    assert past_end.status_code == 416

    redirected = deployment.client.get(
        onnx_url + "?redirect=true", headers=headers, follow_redirects=False
    )
    if deployment.name == "production":
        assert redirected.status_code == 307
        location = redirected.headers["location"]
        assert "X-Amz-Signature" in location
        with urllib.request.urlopen(location, timeout=30) as presigned:
            assert presigned.read() == files["student.onnx"]
            assert 'filename="student.onnx"' in presigned.headers["Content-Disposition"]
    else:
        # A local store cannot presign: the API hands out its own signed, expiring link.
        assert redirected.status_code == 307
        location = redirected.headers["location"]
        assert "/downloads/" in location
        linked = deployment.client.get(location)  # the in-process API; no API key
        assert linked.status_code == 200, linked.text
        assert linked.content == files["student.onnx"]
        assert 'filename="student.onnx"' in linked.headers["Content-Disposition"]
