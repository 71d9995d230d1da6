"""The dataset state machine: which moves exist, that a guarded move cannot happen twice, and the
event log a team reads at ``GET /v1/datasets/{id}/events``."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import new_id, session_scope, utcnow
from app.core.errors import IllegalTransition
from app.core.storage import ObjectStore
from app.datasets.models import Dataset, DatasetEvent, DatasetStatus
from app.datasets.service import DIRECT_UPLOAD_TTL, expire_direct_uploads
from app.datasets.state import ALLOWED, add_created_event, check_transition, transition
from app.jobs.models import Job, JobStatus
from foprokd.synthetic import archive_bytes, sample_dataset
from tests.unit.datasets.conftest import Team, make_team
from workers.ingest import ingest_dataset

LIVE = (DatasetStatus.uploading, DatasetStatus.validating, DatasetStatus.ready)
LEGAL = {
    (DatasetStatus.uploading, DatasetStatus.validating),
    (DatasetStatus.validating, DatasetStatus.ready),
    (DatasetStatus.validating, DatasetStatus.invalid),
    *((source, DatasetStatus.deleting) for source in (*LIVE, DatasetStatus.invalid)),
    (DatasetStatus.deleting, DatasetStatus.deleted),
}


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(DatasetStatus, DatasetStatus))
)
def test_only_the_documented_moves_are_allowed(
    source: DatasetStatus, target: DatasetStatus
) -> None:
    if (source, target) in LEGAL:
        check_transition(source, target)
    else:
        with pytest.raises(IllegalTransition) as raised:
            check_transition(source, target)
        assert raised.value.status_code == 409
        assert raised.value.details == {"from": source.value, "to": target.value}
    assert (target in ALLOWED[source]) == ((source, target) in LEGAL)


def upload(client: TestClient, team: Team) -> str:
    data = archive_bytes(sample_dataset(head=6, imbalance=2, classes=3).members, "zip")
    response = client.post(
        "/v1/datasets",
        headers=team.auth(),
        data={"name": "skin"},
        files={"file": ("skin.zip", data, "application/zip")},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def events(dataset_id: str) -> list[DatasetEvent]:
    with session_scope() as session:
        query = select(DatasetEvent).where(DatasetEvent.dataset_id == dataset_id)
        return list(session.scalars(query.order_by(DatasetEvent.id)))


def test_a_guarded_move_happens_once_with_one_event(client: TestClient, team: Team) -> None:
    dataset_id = upload(client, team)
    with session_scope() as session:
        moves = [
            transition(
                session,
                dataset_id,
                source=DatasetStatus.validating,
                target=DatasetStatus.invalid,
                message="test",
            )
            for _ in range(2)
        ]
        status = session.get_one(Dataset, dataset_id).status
    assert moves == [True, False]
    assert status == DatasetStatus.invalid.value
    assert [(e.kind, e.data) for e in events(dataset_id)] == [
        ("created", {"to": "validating"}),
        ("state", {"from": "validating", "to": "invalid"}),
    ]


def test_the_event_log_follows_a_dataset_from_upload_to_its_deleted_record(
    client: TestClient, team: Team
) -> None:
    dataset_id = upload(client, team)
    assert ingest_dataset(dataset_id) == "ready"
    with session_scope() as session:  # a finished job keeps the dataset as a deleted record
        session.add(
            Job(
                team_id=team.id,
                dataset_id=dataset_id,
                teacher="resnet18",
                student="resnet18",
                method="ekd",
                status=JobStatus.succeeded.value,
            )
        )
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=team.auth()).status_code == 204

    url = f"/v1/datasets/{dataset_id}/events"
    page = client.get(url, headers=team.auth("viewer"))
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 4
    assert [(e["kind"], e["data"].get("from"), e["data"]["to"]) for e in body["items"]] == [
        ("created", None, "validating"),
        ("state", "validating", "ready"),
        ("state", "ready", "deleting"),
        ("state", "deleting", "deleted"),
    ]
    assert "images in 3 classes" in body["items"][1]["message"]
    after = body["items"][1]["id"]
    rest = client.get(f"{url}?after_id={after}&limit=1", headers=team.auth()).json()
    assert (rest["total"], [e["data"]["to"] for e in rest["items"]]) == (2, ["deleting"])
    assert client.get(url, headers=make_team().auth()).status_code == 404


def test_a_crashed_validation_logs_why_it_became_invalid(
    client: TestClient, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import ingest

    dataset_id = upload(client, team)

    def crash(dataset_id: str) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr(ingest, "ingest_dataset", crash)
    assert ingest.validate_dataset.apply(args=[dataset_id]).failed()
    last = events(dataset_id)[-1]
    assert last.data == {"from": "validating", "to": "invalid", "code": "internal_error"}
    assert "RuntimeError" in last.message


def test_an_abandoned_direct_upload_expires_with_its_events(team: Team, store: ObjectStore) -> None:
    with session_scope() as session:
        dataset = Dataset(
            id=new_id("ds"),
            team_id=team.id,
            name="abandoned",
            status=DatasetStatus.uploading.value,
            created_at=utcnow() - DIRECT_UPLOAD_TTL - timedelta(minutes=1),
        )
        session.add(dataset)
        add_created_event(session, dataset, "Direct upload begun.")
        session.flush()
        dataset_id = dataset.id
    assert [e.kind for e in events(dataset_id)] == ["created"]
    with session_scope() as session:
        assert expire_direct_uploads(session, store) == [dataset_id]
        assert session.get(Dataset, dataset_id) is None
    assert events(dataset_id) == []
