"""Uploads stream from disk with progress; downloads land atomically, checked and resumable;
``wait_ready`` ends ready or with the dataset's problems."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest

from fopro_client import Conflict, DatasetInvalid, DownloadMismatch, FoproError
from tests.unit.client.conftest import CREATED, DroppingStream, Server, dataset_json

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def multipart_parts(request: httpx.Request) -> list[tuple[str, bytes]]:
    """(Content-Disposition, body) of each part, in order."""
    boundary = re.search(r"boundary=(\S+)", request.headers["content-type"]).group(1)  # type: ignore[union-attr]
    parts = []
    for raw in request.content.split(b"--" + boundary.encode())[1:-1]:
        head, _, body = raw.strip(b"\r\n").partition(b"\r\n\r\n")
        parts.append((head.decode().splitlines()[0], body))
    return parts


def test_an_upload_streams_the_file_with_fields_first_and_reports_progress(tmp_path: Path) -> None:
    archive = tmp_path / "derm-2026.tar.gz"
    archive.write_bytes(PAYLOAD)
    server = Server(lambda request: httpx.Response(202, json=dataset_json(name="derm-2026")))
    seen: list[tuple[str, int, int]] = []
    with server.client() as client:
        dataset = client.upload_dataset(
            archive, split_seed=7, layout="folders", progress=lambda *a: seen.append(a)
        )
    assert dataset.status == "validating"
    request = server.requests[0]
    # Streamed with a known length (not read into memory, not chunked).
    assert request.headers["content-length"] == str(len(request.content))
    parts = multipart_parts(request)
    names = [re.search(r'name="([^"]+)"', head).group(1) for head, _ in parts]  # type: ignore[union-attr]
    assert names == ["name", "layout", "split_seed", "file"]  # the API wants fields first
    assert parts[0][1] == b"derm-2026"  # the name defaults to the file name without .tar.gz
    assert 'filename="derm-2026.tar.gz"' in parts[-1][0]
    assert parts[-1][1] == PAYLOAD
    # Many small reads, monotonic, ending at the file size.
    done = [d for _, d, _ in seen]
    assert len(done) >= 16
    assert done == sorted(done)
    assert done[-1] == len(PAYLOAD)
    assert {label for label, _, _ in seen} == {"derm-2026.tar.gz"}
    assert {total for _, _, total in seen} == {len(PAYLOAD)}


def test_a_missing_archive_is_a_clear_error(tmp_path: Path) -> None:
    server = Server(lambda request: httpx.Response(500))
    with server.client() as client, pytest.raises(FileNotFoundError, match=r"no-such\.zip"):
        client.upload_dataset(tmp_path / "no-such.zip")
    assert server.requests == []


def test_wait_ready_polls_until_ready() -> None:
    answers = iter(["validating", "validating", "ready"])
    server = Server(lambda r: httpx.Response(200, json=dataset_json(status=next(answers))))
    with server.client() as client:
        assert client.wait_ready("ds_1", poll_s=0).status == "ready"
    assert len(server.requests) == 3


def test_wait_ready_raises_the_problems_of_an_invalid_dataset() -> None:
    problems = [
        {"entry": "../evil.png", "code": "path_traversal", "message": "Remove it."},
        {"entry": "a/b.png", "code": "not_decodable", "message": "Not an image."},
    ]
    server = Server(
        lambda r: httpx.Response(200, json=dataset_json(status="invalid", problems=problems))
    )
    with server.client() as client, pytest.raises(DatasetInvalid) as caught:
        client.wait_ready("ds_1", poll_s=0)
    assert [p.code for p in caught.value.problems] == ["path_traversal", "not_decodable"]
    assert "../evil.png: Remove it." in caught.value.message
    assert caught.value.details == problems


def test_wait_ready_on_a_deleted_dataset_is_a_conflict() -> None:
    server = Server(lambda r: httpx.Response(200, json=dataset_json(status="deleting")))
    with server.client() as client, pytest.raises(Conflict, match="deleting"):
        client.wait_ready("ds_1", poll_s=0)


def test_wait_ready_times_out() -> None:
    server = Server(lambda r: httpx.Response(200, json=dataset_json(status="validating")))
    with server.client() as client, pytest.raises(TimeoutError, match="still validating"):
        client.wait_ready("ds_1", poll_s=0.01, timeout_s=0.05)


def artifact_row(name: str = "student.onnx", sha: str = SHA, size: int = len(PAYLOAD)) -> dict:
    return {
        "name": name,
        "media_type": "application/octet-stream",
        "bytes": size,
        "sha256": sha,
        "created_at": CREATED,
        "url": f"/v1/jobs/job_1/artifacts/{name}",
    }


def artifact_server(*file_answers: httpx.Response, row: dict | None = None) -> Server:
    answers = iter(file_answers)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/job_1/artifacts":
            return httpx.Response(200, json=[row or artifact_row()])
        return next(answers)

    return Server(handler)


ETAG = {"ETag": f'"{SHA}"'}


def test_a_download_lands_whole_with_its_recorded_hash(tmp_path: Path) -> None:
    server = artifact_server(httpx.Response(200, content=PAYLOAD, headers=ETAG))
    seen: list[int] = []
    with server.client() as client:
        paths = client.download_artifacts(
            "job_1", tmp_path / "out", progress=lambda _n, done, _t: seen.append(done)
        )
    assert paths == [tmp_path / "out" / "student.onnx"]
    assert paths[0].read_bytes() == PAYLOAD
    assert seen[-1] == len(PAYLOAD)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["student.onnx"]


def test_a_dropped_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    half = len(PAYLOAD) // 2
    server = artifact_server(
        httpx.Response(200, headers=ETAG, stream=DroppingStream(PAYLOAD[:half])),
        httpx.Response(206, content=PAYLOAD[half:], headers=ETAG),
    )
    with server.client() as client:
        (path,) = client.download_artifacts("job_1", tmp_path)
    assert path.read_bytes() == PAYLOAD
    resumed = server.requests[-1]
    assert resumed.headers["Range"] == f"bytes={half}-"
    assert resumed.headers["If-Range"] == f'"{SHA}"'


def test_a_server_that_ignores_the_range_sends_the_file_again(tmp_path: Path) -> None:
    server = artifact_server(
        httpx.Response(200, headers=ETAG, stream=DroppingStream(PAYLOAD[:1000])),
        httpx.Response(200, content=PAYLOAD, headers=ETAG),
    )
    with server.client() as client:
        (path,) = client.download_artifacts("job_1", tmp_path)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("body", [PAYLOAD[:-1], PAYLOAD[:-1] + b"X"], ids=["short", "altered"])
def test_a_download_that_does_not_match_leaves_nothing(tmp_path: Path, body: bytes) -> None:
    (tmp_path / "student.onnx").write_bytes(b"the previous good copy")
    server = artifact_server(httpx.Response(200, content=body, headers=ETAG))
    with server.client() as client, pytest.raises(DownloadMismatch):
        client.download_artifacts("job_1", tmp_path)
    # No temp file left, and the old copy is untouched (the rename never happened).
    assert [p.name for p in tmp_path.iterdir()] == ["student.onnx"]
    assert (tmp_path / "student.onnx").read_bytes() == b"the previous good copy"


def test_an_artifact_name_with_a_path_is_refused(tmp_path: Path) -> None:
    server = artifact_server(row=artifact_row(name="../../.bashrc"))
    with server.client() as client, pytest.raises(FoproError, match="Refusing"):
        client.download_artifacts("job_1", tmp_path / "out")
    assert not (tmp_path / ".bashrc").exists()


def test_only_the_named_artifacts_download_and_unknown_names_are_an_error(tmp_path: Path) -> None:
    server = artifact_server(httpx.Response(200, content=PAYLOAD, headers=ETAG))
    with server.client() as client:
        with pytest.raises(FoproError, match=r"model_card\.md"):
            client.download_artifacts("job_1", tmp_path, names=["model_card.md"])
        assert client.download_artifacts("job_1", tmp_path, names=[]) == []


def test_predict_sends_every_image_as_files(tmp_path: Path) -> None:
    images = []
    for name in ("a.png", "b.jpg"):
        (tmp_path / name).write_bytes(name.encode() * 10)
        images.append(tmp_path / name)
    answer = {
        "job_id": "job_1",
        "model_sha256": SHA,
        "image_size": 32,
        "predictions": [
            {"filename": p.name, "top_k": [{"label": "nevus", "index": 0, "probability": 0.9}]}
            for p in images
        ],
    }
    server = Server(lambda request: httpx.Response(200, json=answer))
    with server.client() as client:
        predictions = client.predict("job_1", images, top_k=1)
    assert [p.filename for p in predictions.predictions] == ["a.png", "b.jpg"]
    parts = multipart_parts(server.requests[0])
    assert [head for head, _ in parts] == [
        'Content-Disposition: form-data; name="files"; filename="a.png"',
        'Content-Disposition: form-data; name="files"; filename="b.jpg"',
    ]
    assert server.requests[0].url.params["top_k"] == "1"
    assert "precision" not in server.requests[0].url.params  # the server's default: fp32
    with server.client() as client:
        client.predict("job_1", images[:1], precision="int8")
    assert server.requests[1].url.params["precision"] == "int8"


def test_the_bundle_files_download_like_any_artifact(tmp_path: Path) -> None:
    # The client lists artifacts generically: the INT8 model, bundle.json and the golden
    # files come down, checked against their recorded sha256, with no client change.
    bodies = {
        name: name.encode() * 100
        for name in (
            "student.int8.onnx",
            "bundle.json",
            "bundle.sig.json",
            "golden_inputs.npy",
            "golden_outputs.npy",
            "reliability_diagram.png",
        )
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/job_1/artifacts":
            return httpx.Response(
                200,
                json=[
                    artifact_row(name, hashlib.sha256(body).hexdigest(), len(body))
                    for name, body in bodies.items()
                ],
            )
        return httpx.Response(200, content=bodies[request.url.path.rsplit("/", 1)[1]])

    with Server(handler).client() as client:
        paths = client.download_artifacts("job_1", tmp_path)
    assert {p.name: p.read_bytes() for p in paths} == bodies


def test_predict_asks_for_findings_and_heat_maps(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    answer = {
        "job_id": "job_1",
        "model_sha256": SHA,
        "image_size": 32,
        "temperature": 1.7,
        "threshold_profile": "sens95",
        "predictions": [
            {
                "filename": "a.png",
                "top_k": [{"label": "melanoma", "index": 1, "probability": 0.6}],
                "findings": [
                    {"label": "melanoma", "index": 1, "probability": 0.6, "threshold": 0.2}
                ],
                "explanation": {
                    "method": "occlusion",
                    "label": "melanoma",
                    "index": 1,
                    "patch": 8,
                    "passes": 17,
                    "max_drop": 0.4,
                    "png_base64": "iVBORw0KGgo=",
                },
            }
        ],
    }
    server = Server(lambda request: httpx.Response(200, json=answer))
    with server.client() as client:
        predictions = client.predict(
            "job_1", [tmp_path / "a.png"], threshold_profile="sens95", explain=True, patch=8
        )
    params = server.requests[0].url.params
    assert (params["threshold_profile"], params["explain"], params["patch"]) == (
        "sens95",
        "occlusion",
        "8",
    )
    [prediction] = predictions.predictions
    assert prediction.findings is not None
    assert prediction.findings[0].threshold == 0.2
    assert prediction.explanation is not None
    assert prediction.explanation.passes == 17
    assert predictions.temperature == 1.7
