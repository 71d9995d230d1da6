"""bench.isic2019_lt: the paper's split lists load as manifests; stand-in JPEGs flow end to end."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.isic2019_lt import (
    CLASS_NAMES,
    SPLIT_LISTS,
    IsicImagesMissing,
    check_images,
    limit_per_class,
    load_protocol,
    main,
)
from foprokd.image_cache import ImageCache
from foprokd.manifest import ManifestRow


def _write_stand_ins(entries: list[ManifestRow], images: Path) -> None:
    """Small JPEGs named like ISIC ids, coloured by class (the real ones are ~1 MB photos)."""
    rng = np.random.default_rng(0)
    images.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        base = 20 + 28 * CLASS_NAMES.index(entry.label)
        pixels = np.clip(base + rng.integers(-10, 11, (30, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / entry.path, quality=90)


def test_protocol_lists_follow_the_paper() -> None:
    entries = load_protocol(1, "0.01")
    per_split = Counter(e.split for e in entries)
    assert per_split == {"train": 23445, "val": 400, "test": 800}
    val = Counter(e.label for e in entries if e.split == "val")
    test = Counter(e.label for e in entries if e.split == "test")
    assert val == dict.fromkeys(CLASS_NAMES, 50)
    assert test == dict.fromkeys(CLASS_NAMES, 100)
    train = Counter(e.label for e in entries if e.split == "train")
    assert [train[name] for name in CLASS_NAMES] == sorted(train.values(), reverse=True)
    assert all(e.path.startswith("ISIC_") and e.path.endswith(".jpg") for e in entries)


def test_label_is_the_finding_column() -> None:
    with (SPLIT_LISTS / "val_skin2_0.005.csv").open() as handle:
        first = next(csv.DictReader(handle))
    entry = next(e for e in load_protocol(2, "0.005") if e.split == "val")
    assert entry.path == f"{first['image']}.jpg"
    assert entry.label == CLASS_NAMES[int(first["finding"])]
    with pytest.raises(ValueError, match="fold"):
        load_protocol(6, "0.01")


def test_missing_images_name_the_folder_and_the_download(tmp_path: Path) -> None:
    entries = limit_per_class(load_protocol(1, "0.01"), 1)
    with pytest.raises(IsicImagesMissing, match="ISIC_2019_Training_Input") as caught:
        check_images(entries, tmp_path / "absent")
    assert str(tmp_path / "absent") in str(caught.value)
    _write_stand_ins(entries[:-1], tmp_path / "images")
    with pytest.raises(IsicImagesMissing, match=f"1 of {len(entries)}"):
        check_images(entries, tmp_path / "images")


def test_stand_in_images_load_with_paper_labels(tmp_path: Path) -> None:
    entries = limit_per_class(load_protocol(3, "0.002"), 2)
    assert len(entries) == 2 * len(CLASS_NAMES) * 3
    _write_stand_ins(entries, tmp_path / "images")
    check_images(entries, tmp_path / "images")
    cache = ImageCache.build(
        entries,
        root=tmp_path / "images",
        cache_dir=tmp_path / "cache",
        image_size=16,
        classes=CLASS_NAMES,
    )
    for split in ("train", "val", "test"):
        images = cache.split(split)
        assert images.classes == CLASS_NAMES
        assert images.class_counts() == [2] * len(CLASS_NAMES)
        # Stand-ins are coloured by class, so the decoded pixels prove label and image agree.
        brightness = images.images.float().mean(dim=(1, 2, 3))
        expected = 20 + 28 * images.labels.float()
        assert float((brightness - expected).abs().max()) < 4


def test_benchmark_runs_end_to_end_on_stand_ins(tmp_path: Path) -> None:
    entries = limit_per_class(load_protocol(1, "0.01"), 2)
    _write_stand_ins(entries, tmp_path / "images")
    argv = [
        "--images", str(tmp_path / "images"), "--limit-per-class", "2", "--methods", "bsm",
        "--student", "test_resnet", "--image-size", "32", "--batch-size", "8", "--epochs", "1",
        "--device", "cpu", "--allow-random-weights", "--quiet",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "fold1_imb0.01_seed0" / "results.json").read_text())
    assert [row["method"] for row in results["runs"]] == ["bsm"]
    assert 0.0 <= results["runs"][0]["test_balanced_accuracy"] <= 1.0


def test_benchmark_exits_with_a_clear_message_without_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err
    assert "ISIC_2019_Training_Input.zip" in err
