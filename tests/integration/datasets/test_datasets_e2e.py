"""Archives uploaded over HTTP to a real `fopro serve`, validated by a real worker process, on the
S3 deployment (PostgreSQL, Redis, SeaweedFS) and the embedded one (SQLite, local objects).

Good archives become ``ready`` with exact class counts; every attack and mistake issue 4 lists has
its own test here and ends ``invalid`` with a problem naming the entry and no object left behind
(or 4xx at upload for the upload size limit; or ``ready`` with a warning where the issue asks for a
warning). Variants of each (every archive kind, message wording) are covered against the validator
itself in tests/unit/datasets/ingest/test_validation.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import numpy as np
import pytest

from app.core.db import utcnow
from app.core.storage import MultipartUploadInvalid
from app.datasets.models import Dataset
from app.datasets.service import DIRECT_UPLOAD_TTL
from app.jobs.models import Job
from foprokd.synthetic import (
    Member,
    archive_bytes,
    encode_image,
    pixel_bomb_png,
    sample_dataset,
    texture_image,
)
from tests.integration.datasets.conftest import Deployment

pytestmark = pytest.mark.integration


def small_set() -> list[Member]:
    return sample_dataset(classes=3, head=6, imbalance=3, seed=3).members


def assert_invalid_naming(
    deployment: Deployment, data: bytes, entry: str, code: str, filename: str
) -> None:
    """Upload ``data``; the worker must end it invalid with ``code`` for ``entry``, leaving no
    image, manifest or archive object."""
    dataset = deployment.upload_and_settle(data, filename)
    assert dataset["status"] == "invalid", dataset
    assert {"entry": entry, "code": code} in [
        {"entry": p["entry"], "code": p["code"]} for p in dataset["problems"]
    ], dataset["problems"]
    assert deployment.objects(dataset["id"]) == []


def labels_csv(members: list[Member], extra: bytes = b"", skip: str = "") -> Member:
    """A CSV manifest (image,label) listing ``members`` (their folder is the label), less ``skip``,
    then the raw ``extra`` lines."""
    rows = "".join(f"{m.name},{m.name.split('/')[0]}\n" for m in members if m.name != skip).encode()
    return Member("labels.csv", b"image,label\n" + rows + extra)


def noise(nbytes: int, levels: int = 256, seed: int = 0) -> bytes:
    """Random bytes; ``levels`` < 256 makes them compress (about log2(levels) bits per byte)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, levels, nbytes, dtype=np.uint8).tobytes()


def test_good_zip_becomes_ready_with_exact_counts(deployment: Deployment) -> None:
    sample = sample_dataset(classes=4, head=16, imbalance=5, seed=1, root="hospital-export")
    data = archive_bytes(sample.members, "zip")
    dataset = deployment.upload_and_settle(data, "derm.zip", split_seed="42")
    assert dataset["status"] == "ready", dataset["problems"]
    assert dataset["classes"] == sample.classes
    assert dataset["num_images"] == sample.num_images
    assert dataset["stats"]["class_totals"] == sample.class_counts
    assert dataset["split_seed"] == 42
    counts = dataset["stats"]["class_counts"]
    assert all(counts["val"][c] >= 1 and counts["test"][c] >= 1 for c in sample.classes)
    assert dataset["stats"]["progress"]["fraction"] == 1.0
    manifest = deployment.request("GET", f"/v1/datasets/{dataset['id']}/manifest")
    rows = list(csv.DictReader(io.StringIO(manifest.text)))
    assert len(rows) == sample.num_images
    stored = set(deployment.objects(dataset["id"]))
    assert {r["object_key"] for r in rows} | {
        f"teams/{deployment.team_id}/datasets/{dataset['id']}/manifest.csv"
    } == stored


def test_good_tar_gz_with_a_labels_csv_keeps_the_given_splits(deployment: Deployment) -> None:
    sample = sample_dataset(classes=3, head=10, imbalance=3, layout="csv", with_splits=True)
    dataset = deployment.upload_and_settle(archive_bytes(sample.members, "tar.gz"), "endo.tar.gz")
    assert dataset["status"] == "ready", dataset["problems"]
    assert dataset["stats"]["class_counts"] == sample.split_counts
    assert dataset["archive_format"] == "tar.gz"


def test_path_traversal_ends_invalid(deployment: Deployment) -> None:
    data = archive_bytes([*small_set(), Member("class_00/../../../etc/x.png", b"x")], "tar")
    assert_invalid_naming(
        deployment, data, "class_00/../../../etc/x.png", "path_traversal", "a.tar"
    )


def test_symlink_ends_invalid(deployment: Deployment) -> None:
    link = Member("class_00/shadow.png", kind="symlink", target="/etc/shadow")
    data = archive_bytes([*small_set(), link], "zip")
    assert_invalid_naming(deployment, data, "class_00/shadow.png", "link", "a.zip")


def test_absolute_path_ends_invalid(deployment: Deployment) -> None:
    data = archive_bytes([*small_set(), Member("/etc/cron.d/x.png", b"x")], "tar")
    assert_invalid_naming(deployment, data, "/etc/cron.d/x.png", "absolute_path", "a.tar")


def test_hardlink_ends_invalid(deployment: Deployment) -> None:
    link = Member("class_01/copy.png", kind="hardlink", target="class_00/img_0000.png")
    data = archive_bytes([*small_set(), link], "tar")
    assert_invalid_naming(deployment, data, "class_01/copy.png", "link", "a.tar")


@pytest.mark.parametrize("kind", ["chardev", "fifo"])
def test_device_or_fifo_ends_invalid(deployment: Deployment, kind: str) -> None:
    device = Member("class_00/dev.png", kind=kind)  # type: ignore[arg-type]
    data = archive_bytes([*small_set(), device], "tar.gz")
    assert_invalid_naming(deployment, data, "class_00/dev.png", "special_file", "a.tgz")


def test_entry_over_the_per_file_limit_ends_invalid(deployment: Deployment) -> None:
    big = Member("class_01/scan.png", noise(2_100_000))  # limit: 2 000 000 bytes
    data = archive_bytes([*small_set(), big], "zip")
    assert_invalid_naming(deployment, data, "class_01/scan.png", "file_too_large", "a.zip")


def test_archive_over_the_total_uncompressed_limit_ends_invalid(deployment: Deployment) -> None:
    # 3 × 1.9 MB of notes that gzip 4:1 (under the ratio limit): a 1.5 MB upload that unpacks
    # past the 4 MB total; the third is the first entry beyond it.
    notes = [Member(f"class_00/notes_{n}.txt", noise(1_900_000, 4, seed=n)) for n in range(3)]
    data = archive_bytes([*small_set(), *notes], "tar.gz")
    assert len(data) < 4_000_000
    assert_invalid_naming(deployment, data, "class_00/notes_2.txt", "total_too_large", "a.tgz")


def test_more_files_than_the_limit_ends_invalid(deployment: Deployment) -> None:
    members = small_set()
    extra = [Member(f"class_00/note_{n:04d}.txt", b"x") for n in range(1001 - len(members))]
    data = archive_bytes([*members, *extra], "tar")  # 1001 entries, the limit is 1000
    assert_invalid_naming(deployment, data, extra[-1].name, "too_many_files", "a.tar")


def test_zip_bomb_ends_invalid(deployment: Deployment) -> None:
    bomb = Member("class_01/bomb.png", b"\0" * 1_500_000)
    data = archive_bytes([*small_set(), bomb], "zip")
    assert len(data) < 100_000
    assert_invalid_naming(deployment, data, "class_01/bomb.png", "compression_ratio", "a.zip")


def test_decompression_bomb_image_ends_invalid(deployment: Deployment) -> None:
    data = archive_bytes(
        [*small_set(), Member("class_02/huge.png", pixel_bomb_png(3000, 3000))], "tar.gz"
    )
    assert_invalid_naming(deployment, data, "class_02/huge.png", "too_many_pixels", "a.tgz")


def test_corrupt_image_ends_invalid(deployment: Deployment) -> None:
    sample = sample_dataset(classes=3, head=6, imbalance=3, corrupt=1)
    data = archive_bytes(sample.members, "zip")
    assert_invalid_naming(deployment, data, sample.corrupt[0], "truncated_image", "a.zip")


def test_undecodable_image_ends_invalid(deployment: Deployment) -> None:
    fake = Member("class_01/fake.jpg", b"this is not a jpeg at all")
    data = archive_bytes([*small_set(), fake], "zip")
    assert_invalid_naming(deployment, data, "class_01/fake.jpg", "not_decodable", "a.zip")


def test_non_image_files_are_ignored_with_a_warning(deployment: Deployment) -> None:
    sample = small_set()
    notes = Member("class_00/notes.txt", b"seen by dr. x")
    dataset = deployment.upload_and_settle(archive_bytes([*sample, notes], "zip"), "a.zip")
    assert dataset["status"] == "ready", dataset["problems"]
    assert {"entry": "class_00/notes.txt", "code": "ignored_file"} in [
        {"entry": w["entry"], "code": w["code"]} for w in dataset["warnings"]
    ]
    assert dataset["num_images"] == len(sample)


def test_non_image_named_by_the_manifest_ends_invalid(deployment: Deployment) -> None:
    images = small_set()
    report = Member("class_00/report.pdf", b"%PDF-1.4")
    members = [*images, report, labels_csv([*images, report])]
    data = archive_bytes(members, "tar.gz")
    assert_invalid_naming(deployment, data, "class_00/report.pdf", "not_an_image", "a.tgz")


def test_labels_csv_missing_a_file_ends_invalid(deployment: Deployment) -> None:
    images = small_set()
    data = archive_bytes([*images, labels_csv(images, skip=images[4].name)], "zip")
    assert_invalid_naming(deployment, data, images[4].name, "unlisted_file", "a.zip")


def test_label_with_a_single_image_ends_invalid(deployment: Deployment) -> None:
    rng = np.random.default_rng(4)
    only = Member("class_09/only.png", encode_image(texture_image(3, 4, rng)))
    data = archive_bytes([*small_set(), only], "zip")
    assert_invalid_naming(deployment, data, "class_09/only.png", "too_few_images", "a.zip")


def test_labels_csv_that_is_not_utf8_ends_invalid(deployment: Deployment) -> None:
    images = small_set()
    latin1 = f"{images[0].name},Läsion\n".encode("latin-1")
    data = archive_bytes([*images, labels_csv(images[1:], extra=latin1)], "zip")
    # Header, 10 listed images, then the Latin-1 line: line 12.
    assert_invalid_naming(deployment, data, "labels.csv:12", "manifest_encoding", "a.zip")


def test_malformed_labels_csv_ends_invalid(deployment: Deployment) -> None:
    images = small_set()
    bad = f"{images[0].name},class_00,extra\n".encode()  # a field too many on line 12
    data = archive_bytes([*images, labels_csv(images[1:], extra=bad)], "tar")
    assert_invalid_naming(deployment, data, "labels.csv:12", "manifest_malformed", "a.tar")


def test_labels_csv_naming_a_missing_file_ends_invalid(deployment: Deployment) -> None:
    sample = sample_dataset(classes=3, head=6, imbalance=3, layout="csv")
    members = [m for m in sample.members if m.name != "images/class_00_0003.png"]
    data = archive_bytes(members, "tar.gz")
    assert_invalid_naming(deployment, data, "images/class_00_0003.png", "missing_file", "a.tgz")


def test_duplicate_across_classes_ends_invalid(deployment: Deployment) -> None:
    members = small_set()
    copy = Member("class_02/copy.png", members[0].data)
    assert_invalid_naming(
        deployment,
        archive_bytes([*members, copy], "zip"),
        "class_02/copy.png",
        "duplicate_across_classes",
        "a.zip",
    )


def test_duplicate_within_a_class_is_kept_once_with_a_warning(deployment: Deployment) -> None:
    sample = small_set()
    copy = Member("class_00/copy.png", sample[0].data)
    dataset = deployment.upload_and_settle(archive_bytes([*sample, copy], "zip"), "a.zip")
    assert dataset["status"] == "ready", dataset["problems"]
    # One of the two is kept (whichever the validator met first); the warning names both.
    (warning,) = [w for w in dataset["warnings"] if w["code"] == "duplicate_within_class"]
    pair = {"class_00/copy.png", sample[0].name}
    assert warning["entry"] in pair
    assert (pair - {warning["entry"]}).pop() in warning["message"]
    assert dataset["stats"]["class_totals"] == {"class_00": 6, "class_01": 3, "class_02": 2}


def test_grayscale_16bit_and_cmyk_are_converted_with_warnings(deployment: Deployment) -> None:
    rng = np.random.default_rng(9)
    odd = [
        Member("class_00/gray.png", encode_image(texture_image(0, 3, rng), "PNG", "L")),
        Member("class_02/deep.png", encode_image(texture_image(2, 3, rng), "PNG", "I;16")),
        Member("class_01/cmyk.jpg", encode_image(texture_image(1, 3, rng), "JPEG", "CMYK")),
    ]
    dataset = deployment.upload_and_settle(archive_bytes([*small_set(), *odd], "zip"), "a.zip")
    assert dataset["status"] == "ready", dataset["problems"]
    converted = {w["entry"] for w in dataset["warnings"] if w["code"] == "converted"}
    assert converted == {"class_00/gray.png", "class_02/deep.png", "class_01/cmyk.jpg"}


def test_oversize_upload_is_refused_while_streaming_and_leaves_nothing(
    deployment: Deployment,
) -> None:
    before = deployment.request("GET", "/v1/datasets").json()["total"]

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        yield archive_bytes(small_set(), "zip")
        for _ in range(80):
            yield np.random.default_rng(0).bytes(64 * 1024)

    response = deployment.request(
        "POST",
        "/v1/datasets?name=too-big",
        content=body(),
        headers={"Content-Type": "application/zip"},
    )
    assert response.status_code == 413, response.text
    assert deployment.request("GET", "/v1/datasets").json()["total"] == before
    assert [
        k
        for k in (i.key for i in deployment.store.list(f"teams/{deployment.team_id}/"))
        if k.endswith("/archive")
    ] == []


def test_content_that_is_not_an_archive_is_refused(deployment: Deployment) -> None:
    response = deployment.upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 1000, "not-an-archive", "x.zip")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_archive"


def test_delete_is_refused_while_a_job_uses_the_dataset_then_removes_everything(
    deployment: Deployment,
) -> None:
    dataset = deployment.upload_and_settle(archive_bytes(small_set(), "zip"), "a.zip")
    assert dataset["status"] == "ready"
    job = Job(
        team_id=deployment.team_id,
        dataset_id=dataset["id"],
        teacher="resnet18",
        student="resnet18",
        method="fopro_akd",
    )
    deployment.session.add(job)
    deployment.session.commit()
    refused = deployment.request("DELETE", f"/v1/datasets/{dataset['id']}")
    assert refused.status_code == 409
    assert refused.json()["error"]["details"]["jobs"] == [job.id]
    assert deployment.objects(dataset["id"])
    job.status = "cancelled"
    deployment.session.commit()
    assert deployment.request("DELETE", f"/v1/datasets/{dataset['id']}").status_code == 204
    assert deployment.objects(dataset["id"]) == []


def test_direct_multipart_upload_to_s3(deployment: Deployment) -> None:
    data = archive_bytes(sample_dataset(classes=3, head=8, imbalance=2).members, "tar.gz")
    started = deployment.request(
        "POST",
        "/v1/datasets/uploads",
        json={"name": "direct", "size": len(data), "filename": "d.tgz"},
    )
    if deployment.name == "embedded":
        assert started.status_code == 501
        return
    assert started.status_code == 201, f"{started.text}\n{deployment.logs()}"
    plan = started.json()
    assert len(plan["parts"]) == 1
    etags = []
    with httpx.Client(timeout=60) as s3:
        for part in plan["parts"]:
            start = (part["part_number"] - 1) * plan["part_size"]
            put = s3.put(part["url"], content=data[start : start + plan["part_size"]])
            assert put.status_code == 200, put.text
            etags.append({"part_number": part["part_number"], "etag": put.headers["ETag"]})
    assert (
        deployment.request("GET", f"/v1/datasets/{plan['dataset_id']}").json()["status"]
        == "uploading"
    )
    completed = deployment.request("POST", plan["complete_url"], json={"parts": etags})
    assert completed.status_code == 202, completed.text
    dataset = deployment.settle(plan["dataset_id"])
    assert dataset["status"] == "ready", dataset["problems"]
    assert dataset["archive_bytes"] == len(data)
    assert dataset["content_sha256"] == hashlib.sha256(data).hexdigest()


def test_a_direct_upload_never_completed_is_expired_by_the_workers_reaper(
    deployment: Deployment,
) -> None:
    if deployment.name == "embedded":
        pytest.skip("direct uploads need S3 (the embedded store answers 501, tested above)")
    data = b"\x1f\x8b" + bytes(100)  # never validated: only the part matters
    plan = deployment.request(
        "POST", "/v1/datasets/uploads", json={"name": "abandoned", "size": len(data)}
    ).json()
    with httpx.Client(timeout=60) as s3:
        put = s3.put(plan["parts"][0]["url"], content=data)
    assert put.status_code == 200, put.text
    row = deployment.session.get(Dataset, plan["dataset_id"])
    assert row is not None
    upload_id, key = row.options["upload"]["id"], row.archive_key
    assert key is not None
    row.created_at = utcnow() - DIRECT_UPLOAD_TTL - timedelta(minutes=1)  # as if a day passed
    deployment.session.commit()

    # The worker's reaper sweeps every heartbeat (10 s by default).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if deployment.request("GET", f"/v1/datasets/{plan['dataset_id']}").status_code == 404:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the abandoned upload was not expired\n{deployment.logs()}")
    # The multipart upload was aborted: its parts are gone and it can no longer be completed.
    with pytest.raises(MultipartUploadInvalid):
        deployment.store.complete_multipart_upload(key, upload_id, [(1, put.headers["ETag"])])
    assert deployment.objects(plan["dataset_id"]) == []
