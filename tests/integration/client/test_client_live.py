"""``FoproClient`` against a live service on both deployments: an archive streamed up and
validated, a job submitted (idempotently), watched live over SSE, its artifacts downloaded and
checked, predictions made; and the API's refusals arriving as typed errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fopro_client import (
    AuthError,
    Conflict,
    DatasetInvalid,
    Event,
    FoproClient,
    Forbidden,
    JobProgress,
    NotFound,
    StreamEnd,
    ValidationFailed,
)
from foprokd.synthetic import Member, sample_dataset, write_archive
from tests.integration.client.conftest import JOB, Journey, Live

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_an_upload_streams_with_progress_and_validates(journey: Journey) -> None:
    size = journey.archive.stat().st_size
    assert journey.uploaded[-1] == ("derm-2026.zip", size, size)
    assert journey.dataset.name == "derm-2026"
    assert journey.dataset.status == "ready", journey.dataset.problems
    assert journey.dataset.classes == journey.classes
    assert journey.dataset.num_images == journey.num_images
    assert journey.dataset.split_seed == 3


def test_a_repeated_submission_names_the_same_job(journey: Journey, client: FoproClient) -> None:
    assert journey.repeat.id == journey.job.id
    listed = client.list_jobs(dataset_id=journey.dataset.id)
    assert [j.id for j in listed.items] == [journey.job.id]


def test_watch_delivers_every_event_once_in_order(journey: Journey, client: FoproClient) -> None:
    events = [u for u in journey.updates if isinstance(u, Event)]
    logged = client.job_events(journey.job.id, limit=1000).items
    assert [e.id for e in events] == [e.id for e in logged]
    assert events[-1].data.get("to") == "succeeded"
    progress = [u for u in journey.updates if isinstance(u, JobProgress)]
    assert {"queued", "running", "succeeded"} >= {p.status for p in progress}
    assert progress[-1].status == "succeeded"
    assert journey.updates[-1] == StreamEnd(status="succeeded")


def test_watch_from_a_last_event_id_sends_only_newer_events(
    journey: Journey, client: FoproClient
) -> None:
    logged = [e.id for e in client.job_events(journey.job.id, limit=1000).items]
    middle = logged[len(logged) // 2]
    replay = list(client.watch(journey.job.id, last_event_id=middle))
    assert [u.id for u in replay if isinstance(u, Event)] == [i for i in logged if i > middle]
    assert replay[-1] == StreamEnd(status="succeeded")


def test_downloads_are_the_recorded_files(journey: Journey, client: FoproClient) -> None:
    recorded = {a.name: a for a in client.list_artifacts(journey.job.id)}
    assert {p.name for p in journey.downloads} == set(recorded)
    assert {"student.onnx", "model_card.json", "config.json"} <= set(recorded)
    for path in journey.downloads:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[path.name].sha256
    assert sorted(p.name for p in journey.downloads[0].parent.iterdir()) == sorted(recorded)


def test_predict_answers_per_image(journey: Journey, client: FoproClient) -> None:
    answer = client.predict(journey.job.id, journey.images, top_k=3)
    assert [p.filename for p in answer.predictions] == [p.name for p in journey.images]
    for prediction in answer.predictions:
        assert [s.label for s in prediction.top_k] != []
        assert {s.label for s in prediction.top_k} <= set(journey.classes)
        assert sum(s.probability for s in prediction.top_k) == pytest.approx(1.0, abs=1e-4)


def test_refusals_arrive_as_typed_errors(
    live: Live, journey: Journey, client: FoproClient, tmp_path: Path
) -> None:
    with pytest.raises(NotFound) as missing:
        client.get_job("job_doesnotexist")
    assert missing.value.status == 404
    with live.client("fpk_not-a-key") as stranger, pytest.raises(AuthError):
        stranger.list_datasets()
    with live.client(live.viewer_key) as viewer, pytest.raises(Forbidden):
        viewer.submit_job(journey.dataset.id, **JOB)
    with pytest.raises(Conflict) as taken:
        client.upload_dataset(journey.archive)  # the same name again
    assert taken.value.code == "dataset_name_taken"
    with pytest.raises(ValidationFailed) as unknown:
        client.submit_job(journey.dataset.id, "resnet18", "no_such_student")
    assert "no_such_student" in unknown.value.message
    with pytest.raises(Conflict) as finished:
        client.cancel_job(journey.job.id)
    assert finished.value.code == "illegal_transition"


def test_an_invalid_archive_ends_with_its_problems(client: FoproClient, tmp_path: Path) -> None:
    members = [*sample_dataset(classes=2, head=4, seed=5).members, Member("../escape.png", b"x")]
    archive = write_archive(tmp_path / "hostile.zip", members, "zip")
    dataset = client.upload_dataset(archive)
    with pytest.raises(DatasetInvalid) as invalid:
        client.wait_ready(dataset.id, timeout_s=90, poll_s=0.3)
    assert "../escape.png" in [p.entry for p in invalid.value.problems]
    client.delete_dataset(dataset.id)
    with pytest.raises(NotFound):
        client.get_dataset(dataset.id)
