"""A succeeded job whose artifacts were uploaded the way the worker uploads them.

The student is a tiny random-weight timm model exported once per session by the engine's real
``export_student`` (safetensors, config.json, TorchScript, ONNX with parity checked).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.storage import open_object_store
from app.datasets.models import Dataset, DatasetStatus
from app.jobs.models import Job, JobStatus
from app.students.predict import runtime_cache
from app.students.service import upload_artifact
from app.teams.models import Role
from app.teams.service import create_api_key, create_team
from foprokd.export import export_student
from foprokd.student import StudentClassifier, build_classifier
from tests.conftest import Service

TINY_STUDENT = "test_resnet"
IMAGE_SIZE = 32
CLASSES = ["benign", "malignant", "vascular"]


@dataclass(frozen=True)
class ExportedFiles:
    classifier: StudentClassifier
    files: dict[str, Path]  # artifact name -> local file


@dataclass(frozen=True)
class FinishedJob:
    team_id: str
    headers: dict[str, str]
    job_id: str
    files: dict[str, Path]


@pytest.fixture(scope="session")
def exported_student(tmp_path_factory: pytest.TempPathFactory) -> ExportedFiles:
    torch.manual_seed(7)
    classifier = build_classifier(TINY_STUDENT, len(CLASSES)).eval()
    with torch.no_grad():
        # Non-default BatchNorm statistics, so the exported graph has something to get wrong.
        classifier.train()(torch.rand(16, 3, IMAGE_SIZE, IMAGE_SIZE))
        # Confident logits: near-uniform probabilities would hide a preprocessing difference.
        classifier.fc.weight.mul_(50.0)
    classifier.eval()
    out_dir = tmp_path_factory.mktemp("student")
    paths = export_student(
        classifier,
        classes=CLASSES,
        image_size=IMAGE_SIZE,
        arch=TINY_STUDENT,
        out_dir=out_dir,
    )
    card = out_dir / "model_card.md"
    card.write_text("# Model card\n\n" + "A line of the card.\n" * 200)
    files = {path.name: path for path in [*paths.values(), card]}
    return ExportedFiles(classifier, files)


@pytest.fixture
def client(embedded_service: Service) -> Iterator[TestClient]:
    from app.main import app

    runtime_cache.clear()
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    runtime_cache.clear()


def make_team_key(name: str, role: Role = Role.member) -> tuple[str, dict[str, str]]:
    """Create team ``name`` with one key; returns (team_id, Authorization headers)."""
    with session_scope() as session:
        team = create_team(session, name)
        _, key = create_api_key(session, team, role, get_settings().secret_key)
        return team.id, {"Authorization": f"Bearer {key}"}


def add_job(team_id: str, status: JobStatus, files: dict[str, Path]) -> str:
    """A job row of ``status`` on a ready dataset, with ``files`` uploaded as its artifacts."""
    store = open_object_store(get_settings())
    with session_scope() as session:
        dataset = Dataset(
            team_id=team_id,
            name=f"derm-{secrets.token_hex(3)}",
            status=DatasetStatus.ready.value,
            classes=CLASSES,
        )
        session.add(dataset)
        session.flush()
        job = Job(
            team_id=team_id,
            dataset_id=dataset.id,
            teacher="resnet50",
            student=TINY_STUDENT,
            method="fopro_akd",
            status=status.value,
        )
        session.add(job)
        session.flush()
        for path in files.values():
            session.add(upload_artifact(store, team_id=team_id, job_id=job.id, path=path))
        return job.id


@pytest.fixture
def finished_job(client: TestClient, exported_student: ExportedFiles) -> FinishedJob:
    team_id, headers = make_team_key("radiology")
    job_id = add_job(team_id, JobStatus.succeeded, exported_student.files)
    return FinishedJob(team_id, headers, job_id, exported_student.files)
