"""The sample-archive generator: long tails, learnable textures, corrupt files on request."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foprokd.cli import main
from foprokd.synthetic import (
    ArchiveKind,
    Member,
    archive_bytes,
    archive_kind,
    long_tail_counts,
    sample_dataset,
    texture_image,
    write_archive,
)


def test_long_tail_counts_fall_from_head_to_tail() -> None:
    counts = long_tail_counts(5, head=100, imbalance=20)
    assert counts[0] == 100
    assert counts[-1] == 5
    assert counts == sorted(counts, reverse=True)
    assert min(long_tail_counts(8, head=10, imbalance=100)) == 2  # every class stays splittable


def test_same_seed_gives_byte_identical_archives() -> None:
    first = archive_bytes(sample_dataset(seed=4).members, "tar.gz")
    assert first == archive_bytes(sample_dataset(seed=4).members, "tar.gz")
    assert first != archive_bytes(sample_dataset(seed=5).members, "tar.gz")


def test_tar_gz_bytes_do_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # gzip stamps the current time in its header unless told otherwise: two archives written
    # a second apart used to differ, and the test above failed whenever it straddled a second.
    members = sample_dataset(classes=2, head=3).members
    first = archive_bytes(members, "tar.gz")
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    assert archive_bytes(members, "tar.gz") == first


def test_textures_are_learnable_by_a_nearest_centroid_classifier() -> None:
    rng = np.random.default_rng(0)

    def features(class_index: int) -> np.ndarray:
        pixels = np.asarray(texture_image(class_index, 6, rng), dtype=np.float32) / 255
        spectrum = np.abs(np.fft.fft2(pixels.mean(axis=2)))[:8, :8].ravel()
        return np.concatenate([spectrum / spectrum.sum(), pixels.mean(axis=(0, 1))])

    train = {k: np.stack([features(k) for _ in range(10)]).mean(axis=0) for k in range(6)}
    hits = 0
    for k in range(6):
        for _ in range(10):
            x = features(k)
            hits += min(train, key=lambda c: float(np.linalg.norm(train[c] - x))) == k
    assert hits / 60 > 0.9


def test_corrupt_files_are_added_on_request_and_do_not_decode() -> None:
    sample = sample_dataset(corrupt=3, layout="csv")
    assert len(sample.corrupt) == 3
    broken = {m.name: m.data for m in sample.members if m.name in sample.corrupt}
    for data in broken.values():
        with pytest.raises(OSError, match=r"truncated|cannot identify"):
            Image.open(io.BytesIO(data)).load()
    labels = next(m.data.decode() for m in sample.members if m.name == sample.manifest)
    assert all(name in labels for name in broken)


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_write_archive_matches_the_in_memory_archive(tmp_path: Path, kind: ArchiveKind) -> None:
    members = sample_dataset().members
    path = write_archive(tmp_path / "sets" / f"a.{kind}", members, kind)
    assert path.read_bytes() == archive_bytes(members, kind)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_failed_write_leaves_no_archive_behind(tmp_path: Path) -> None:
    members = [*sample_dataset().members, Member("x/link.png", kind="hardlink", target="x/a.png")]
    with pytest.raises(ValueError, match="hardlink"):
        write_archive(tmp_path / "a.zip", members, "zip")  # zip cannot hold hardlinks
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.zip", "zip"), ("A.TAR", "tar"), ("a.tar.gz", "tar.gz"), ("a.tgz", "tar.gz")],
)
def test_archive_kind_follows_the_file_name(name: str, kind: str) -> None:
    assert archive_kind(name) == kind


def test_sample_command_writes_the_archive_it_describes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.tar.gz"
    args = ["sample", str(out), "--classes", "3", "--head", "12", "--imbalance", "4"]
    assert main([*args, "--corrupt", "1", "--size", "16"]) == 0
    printed = capsys.readouterr().out
    assert "21 images; class_00 12, class_01 6, class_02 3" in printed
    assert "class_02/corrupt_00.png" in printed
    with tarfile.open(out) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert len(names) == 22
    assert sum(n.startswith("class_00/") for n in names) == 12
    with tarfile.open(out) as tar:
        first = tar.extractfile(names[0])
        assert first is not None
        assert Image.open(first).size == (16, 16)

    # An existing file is kept unless --force; a bad name or size writes nothing.
    before = out.read_bytes()
    assert main(args) == 2
    assert "pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--force", "--seed", "3"]) == 0
    assert out.read_bytes() != before
    assert main(["sample", str(tmp_path / "demo.rar")]) == 2
    assert main(["sample", str(tmp_path / "tiny.zip"), "--size", "4"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.tar.gz"]


def test_sample_command_writes_dicom_patients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pacs.zip"
    args = ["sample", str(out), "--dicom", "--classes", "3", "--head", "12", "--size", "16"]
    assert main(args) == 0
    assert "synthetic patients" in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        first = archive.read(names[0])
    assert names
    assert all(name.endswith(".dcm") for name in names)
    assert first[128:132] == b"DICM"
    again = tmp_path / "again.zip"
    assert main([*args[:1], str(again), *args[2:]]) == 0
    assert again.read_bytes() == out.read_bytes()  # same seed, same files (UIDs included)
    sample = sample_dataset(classes=3, head=12, size=16, image_format="DICOM")
    per_patient = [list(sample.patients.values()).count(p) for p in set(sample.patients.values())]
    assert max(per_patient) > 1
    assert len(per_patient) < sample.num_images
