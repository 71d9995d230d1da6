"""``python -m foprokd``: a tiny end-to-end run leaves a complete, reusable run folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from foprokd.cli import main
from foprokd.export import load_exported

# Tiny timm test models with random weights: no download, a few seconds per epoch on CPU.
TINY = ["--teacher", "test_efficientnet", "--student", "test_resnet", "--image-size", "32"]
COUNTS = {"red": 18, "green": 13, "blue": 9}
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """40 small PNGs in class folders, colour-coded so the task is learnable."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for label, count in COUNTS.items():
        for i in range(count):
            noise = rng.integers(-30, 31, (24, 20, 3))
            pixels = np.clip(np.array(COLOURS[label]) + noise, 0, 255).astype(np.uint8)
            path = root / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


def _train(data: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(
        [
            "train", "--data", str(data), "--out", str(out), "--cache-dir", str(cache),
            *TINY, "--epochs", "1", "--batch-size", "8", "--device", "cpu",
            "--allow-random-weights", "--quiet", *extra,
        ]
    )  # fmt: skip


def test_train_writes_a_complete_run_folder(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(image_folder, run, tmp_path / "cache", "--split-seed", "4") == 0

    names = {p.name for p in run.iterdir()}
    assert {"run.json", "manifest.csv", "checkpoint.pt", "metrics.json", "student"} <= names
    record = json.loads((run / "run.json").read_text())
    assert record["split_seed"] == 4
    assert record["classes"] == ["blue", "green", "red"]
    assert sum(record["split_counts"].values()) == 40
    assert record["config"]["method"] == "fopro"

    with (run / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    assert {r["split"] for r in rows} == {"train", "val", "test"}

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluated_split"] == "test"
    assert metrics["report"]["num_samples"] == record["split_counts"]["test"]
    assert len(metrics["report"]["confusion_matrix"]) == 3
    assert len(metrics["history"]) == 1
    assert metrics["best_epoch"] == 1

    exported = load_exported(run / "student")
    assert exported.classes == ["blue", "green", "red"]
    assert exported.config["method"] == "fopro"
    assert exported.config["train_counts"] == record["train_counts"]
    card = json.loads((run / "student" / "model_card.json").read_text())
    int8 = (
        {"student.int8.onnx", "golden_outputs.int8.npy"}
        if card["trust"]["int8"]["published"]
        else set()
    )
    assert {p.name for p in (run / "student").iterdir()} == {
        "config.json", "student.safetensors", "student.torchscript.pt", "student.onnx",
        "model_card.json", "model_card.md", "training_curves.png", "reliability_diagram.png",
        "bundle.json", "golden_inputs.npy", "golden_outputs.npy", *int8,
    }  # fmt: skip
    card = (run / "student" / "model_card.md").read_text()
    assert "- split: per image" in card  # an image folder names no patients


def test_existing_run_needs_resume(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train(image_folder, run, tmp_path / "cache") == 0
    assert _train(image_folder, run, tmp_path / "cache") == 2
    assert "--resume" in capsys.readouterr().err
    assert _train(image_folder, run, tmp_path / "cache", "--resume", "--epochs", "2") == 0
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 2


def test_evaluate_and_reexport(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(image_folder, run, tmp_path / "cache") == 0
    metrics = json.loads((run / "metrics.json").read_text())

    report_path = tmp_path / "eval.json"
    status = main(
        [
            "evaluate", "--model", str(run), "--data", str(image_folder),
            "--manifest", str(run / "manifest.csv"), "--cache-dir", str(tmp_path / "cache"),
            "--device", "cpu", "--quiet", "--out", str(report_path),
        ]
    )  # fmt: skip
    assert status == 0
    evaluation = json.loads(report_path.read_text())
    assert evaluation["report"]["confusion_matrix"] == metrics["report"]["confusion_matrix"]
    assert "shot_groups" in evaluation["report"]

    again = tmp_path / "again"
    export = ["export", "--run", str(run), "--out", str(again), "--cache-dir", str(tmp_path / "c")]
    assert main([*export, "--quiet"]) == 0
    original = load_exported(run / "student")
    exported = load_exported(again)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(original.classifier(x), exported.classifier(x))
    # The whole deliverable again, not only the weights: the same calibration and operating
    # points (re-fitted on the same val split), a bundle that verifies, and a model card.
    # (The INT8 gate also weighs measured latency, so whether INT8 is published may differ.)
    int8 = {"student.int8.onnx", "golden_outputs.int8.npy"}
    assert {p.name for p in again.iterdir()} - int8 == {
        p.name for p in (run / "student").iterdir()
    } - int8
    card = json.loads((again / "model_card.json").read_text())
    assert (again / "student.int8.onnx").exists() == card["trust"]["int8"]["published"]
    assert exported.config["train_counts"] == original.config["train_counts"]
    assert exported.config["best_epoch"] == original.config["best_epoch"]
    # Re-fitted on logits of the reloaded weights: equal up to float rounding.
    assert exported.config["temperature"] == pytest.approx(original.config["temperature"])
    for profile, thresholds in original.config["operating_points"].items():
        assert exported.config["operating_points"][profile] == pytest.approx(thresholds, abs=1e-6)
    assert main(["verify-bundle", str(again)]) == 0
    report = card["evaluation"]["report"]
    assert report["balanced_accuracy"] == metrics["report"]["balanced_accuracy"]
    assert card["efficiency"]["teacher"] is not None  # the architecture, for its cost
    before = json.loads((run / "student" / "bundle.json").read_text())["provenance"]
    after = json.loads((again / "bundle.json").read_text())["provenance"]
    assert after["dataset_content_hash"] == before["dataset_content_hash"]


def test_reexport_refuses_images_it_cannot_find_or_that_changed(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train(image_folder, run, tmp_path / "cache") == 0
    moved = tmp_path / "moved"
    image_folder.rename(moved)
    export = ["export", "--run", str(run), "--cache-dir", str(tmp_path / "c2"), "--quiet"]
    assert main([*export, "--out", str(tmp_path / "a")]) == 2
    assert "pass the folder that holds them" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main([*export, "--out", str(tmp_path / "b"), "--data", str(moved)]) == 0

    # Same file names, other pixels: the content hash no longer matches the bundle's.
    first = sorted((moved / "red").iterdir())[0]
    Image.fromarray(np.zeros((24, 20, 3), np.uint8)).save(first)
    assert main([*export, "--out", str(tmp_path / "c"), "--data", str(moved)]) == 2
    assert "not the ones" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert main(["export", "--run", str(tmp_path / "nowhere"), "--quiet"]) == 2


def test_missing_weights_fail_before_decoding(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights"
    status = main(
        [
            "train", "--data", str(image_folder), "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--teacher", "resnet18",
            "--weights-dir", str(weights), "--quiet",
        ]
    )  # fmt: skip
    assert status == 2
    assert str(weights / "resnet18.safetensors") in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_manifest_without_splits_is_split_stratified(image_folder: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "labels.csv"
    files = sorted(image_folder.rglob("*.png"))
    manifest.write_text(
        "path,label\n" + "".join(f"{p.relative_to(image_folder)},{p.parent.name}\n" for p in files)
    )
    run = tmp_path / "run"
    assert _train(image_folder, run, tmp_path / "cache", "--manifest", str(manifest),
                  "--method", "bsm", "--no-export") == 0  # fmt: skip
    record = json.loads((run / "run.json").read_text())
    assert record["split_counts"] == {"train": 27, "val": 4, "test": 9}
    assert not (run / "student").exists()
