"""The model card reports the engine's own numbers, and measures costs the way it says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from fopro.cli import cli
from foprokd.bundle import verify_bundle
from foprokd.cli import main as foprokd_cli
from foprokd.data import LabelledImages
from foprokd.evaluation import predict
from foprokd.export import load_exported
from foprokd.hyperparams import TrainConfig
from foprokd.image_cache import decode_image
from foprokd.intervals import report_intervals
from foprokd.manifest import ManifestRow
from foprokd.metrics import classification_report
from foprokd.model_card import (
    FILE_NAMES,
    LatencyProtocol,
    build_model_card,
    count_flops,
    count_parameters,
    render_markdown,
    write_model_card,
)
from foprokd.pipeline import DistillationRequest, ManifestImages, run_distillation
from foprokd.synthetic import sample_dataset
from foprokd.zoo import load_teacher

TEACHER = "test_efficientnet"
STUDENT = "test_resnet"
SIZE = 32
FAST = LatencyProtocol(threads=1, warmup=1, repeats=3)


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real two-epoch EKD run of the engine on a small long-tailed image folder."""
    root = tmp_path_factory.mktemp("run")
    sample = sample_dataset(classes=3, head=20, imbalance=4.0, size=SIZE, with_splits=True)
    entries = []
    for member in sample.members:
        path = root / "data" / member.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(member.data)
        split, label, _ = member.name.split("/")
        entries.append(ManifestRow(member.name, label, split))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine: one thread is faster
    try:
        metrics = run_distillation(
            DistillationRequest(
                images=ManifestImages(root / "data", entries, cache_dir=root / "cache"),
                out_dir=root / "run",
                config=TrainConfig(
                    method="ekd", epochs=2, batch_size=8, image_size=SIZE, device="cpu", seed=1
                ),
                teacher=TEACHER,
                student=STUDENT,
                allow_random_weights=True,
            )
        ).metrics
    finally:
        torch.set_num_threads(threads)
    exported = load_exported(root / "run" / "student")
    test_entries = [e for e in entries if e.split == "test"]
    return {
        "metrics": metrics,
        "exported": exported,
        "onnx": root / "run" / "student" / "student.onnx",
        "test_files": [root / "data" / e.path for e in test_entries],
        "test_labels": [exported.classes.index(e.label) for e in test_entries],
        "train_counts": [
            sum(1 for e in entries if e.split == "train" and e.label == c) for c in exported.classes
        ],
        "card_dir": root / "card",
    }


@pytest.fixture(scope="module")
def card(engine_run: dict[str, Any]) -> dict[str, Path]:
    exported, metrics = engine_run["exported"], engine_run["metrics"]
    built = build_model_card(
        report=metrics["report"],
        evaluated_split=metrics["evaluated_split"],
        history=metrics["history"],
        dataset={
            "name": "derm-sample",
            "classes": exported.classes,
            "class_counts": {"train": engine_run["train_counts"]},
        },
        hyper_parameters=TrainConfig(
            method="ekd", epochs=2, batch_size=8, image_size=SIZE
        ).to_dict(),
        student_name=STUDENT,
        teacher_name=TEACHER,
        student=exported.classifier,
        teacher=load_teacher(TEACHER, allow_random=True),
        onnx_path=engine_run["onnx"],
        protocol=FAST,
    )
    return write_model_card(engine_run["card_dir"], built)


def test_card_report_is_the_engines_report(
    engine_run: dict[str, Any], card: dict[str, Path]
) -> None:
    written = json.loads(card["json"].read_text())
    assert written["evaluation"]["report"] == engine_run["metrics"]["report"]
    assert written["evaluation"]["split"] == "test"

    # And the engine's report is what the exported student really does on the test images.
    exported = engine_run["exported"]
    images = torch.from_numpy(np.stack([decode_image(p, SIZE) for p in engine_run["test_files"]]))
    probs = predict(
        exported.classifier,
        LabelledImages(images, torch.tensor(engine_run["test_labels"]), exported.classes),
        batch_size=16,
        device="cpu",
    )
    recomputed = classification_report(
        engine_run["test_labels"],
        probs.argmax(axis=1),
        exported.classes,
        train_counts=engine_run["train_counts"],
    )
    report = dict(written["evaluation"]["report"])
    intervals = report.pop("intervals")
    assert report == json.loads(json.dumps(recomputed))
    # The intervals are those of the same predictions (seeded: the run's seed).
    again = report_intervals(
        engine_run["test_labels"], probs.argmax(axis=1), exported.classes, seed=1
    )
    assert intervals == json.loads(json.dumps(again))


def test_card_training_section_is_the_engines_history(
    engine_run: dict[str, Any], card: dict[str, Path]
) -> None:
    metrics = engine_run["metrics"]
    training = json.loads(card["json"].read_text())["training"]
    assert training["history"] == json.loads(json.dumps(metrics["history"]))
    assert training["best_epoch"] == metrics["best_epoch"]
    assert training["best_val_balanced_accuracy"] == metrics["best_val_balanced_accuracy"]
    assert training["epochs_trained"] == 2
    assert training["train_seconds"] == pytest.approx(sum(e["seconds"] for e in metrics["history"]))


def test_markdown_shows_the_same_numbers(engine_run: dict[str, Any], card: dict[str, Path]) -> None:
    report = engine_run["metrics"]["report"]
    markdown = card["markdown"].read_text()
    for metric in ("balanced_accuracy", "macro_f1", "mcc", "cohen_kappa", "accuracy"):
        assert f"| {metric} | {report[metric]:.4f} |" in markdown
    for row, bounds in zip(report["per_class"], report["intervals"]["per_class"], strict=True):
        scores = " | ".join(
            f"{row[k]:.4f}" + (f" [{bounds[k][0]:.4f}, {bounds[k][1]:.4f}]" if bounds[k] else "")
            for k in ("precision", "recall", "f1")
        )
        line = f"| {row['class']} | {row['train_count']} | {row['support']} | {scores} |"
        assert line in markdown
    groups = report["shot_groups"]
    for group in ("many", "medium", "few"):
        names = ", ".join(groups[group]["classes"]) or "—"
        accuracy = groups[group]["accuracy"]
        shown = "—" if accuracy is None else f"{accuracy:.4f}"
        assert f"| {group} | {names} | {shown} |" in markdown
    for name, counts in zip(report["class_names"], report["confusion_matrix"], strict=True):
        assert "| " + " | ".join([name, *map(str, counts)]) + " |" in markdown
    assert f"]({FILE_NAMES['curves']})" in markdown


def test_costs_compare_student_and_teacher(
    engine_run: dict[str, Any], card: dict[str, Path]
) -> None:
    cost = json.loads(card["json"].read_text())["efficiency"]
    teacher = load_teacher(TEACHER, allow_random=True)
    assert cost["student"]["params"] == count_parameters(engine_run["exported"].classifier)
    assert cost["teacher"]["params"] == count_parameters(teacher)
    assert cost["teacher"]["flops"] == count_flops(teacher, SIZE)
    assert cost["teacher_over_student"]["params"] == pytest.approx(
        cost["teacher"]["params"] / cost["student"]["params"]
    )
    latencies = [*cost["student"]["latency_ms"].values(), cost["teacher"]["latency_ms"]["pytorch"]]
    assert all(ms > 0 for ms in latencies)
    assert cost["latency_protocol"] == {
        "batch_size": 1,
        "device": "cpu",
        "threads": 1,
        "warmup": 1,
        "repeats": 3,
    }


def test_flops_count_two_per_multiply_add() -> None:
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    assert count_flops(linear, 8) == 2 * 3 * 8 * 8 * 10
    conv = nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
    assert count_flops(conv, 8) == 2 * (3 * 3 * 3) * 4 * 8 * 8


def test_curves_are_a_png(card: dict[str, Path]) -> None:
    with Image.open(card["curves"]) as image:
        assert image.format == "PNG"
        assert image.size == (1100, 400)


def test_without_a_test_split_the_card_says_so(engine_run: dict[str, Any], tmp_path: Path) -> None:
    exported = engine_run["exported"]
    built = build_model_card(
        report=None,
        evaluated_split=None,
        history=engine_run["metrics"]["history"],
        dataset={"name": "no-test", "classes": exported.classes},
        hyper_parameters=TrainConfig(method="bsm", image_size=SIZE).to_dict(),
        student_name=STUDENT,
        teacher_name=None,
        student=exported.classifier,
        teacher=None,
        onnx_path=engine_run["onnx"],
        protocol=FAST,
    )
    paths = write_model_card(tmp_path, built)
    written = json.loads(paths["json"].read_text())
    assert written["evaluation"] is None
    assert written["efficiency"]["teacher"] is None
    assert "no held-out evaluation" in paths["markdown"].read_text()


def test_the_run_card_shows_calibration_operating_points_int8_and_warnings(
    engine_run: dict[str, Any],
) -> None:
    folder = engine_run["onnx"].parent
    card = json.loads((folder / "model_card.json").read_text())
    trust = card["trust"]
    config = engine_run["exported"].config
    assert config["temperature"] == trust["calibration"]["temperature"]
    assert config["operating_points"] == trust["operating_points"]["thresholds"]
    assert set(config["operating_points"]) == {"sens90", "sens95"}
    # The fixture's test split holds a handful of images per class: every class is flagged.
    flagged = {(w["split"], w["class"]) for w in trust["small_classes"]}
    assert {("test", name) for name in engine_run["exported"].classes} <= flagged
    int8 = trust["int8"]
    assert int8["published"] == (folder / "student.int8.onnx").exists()
    assert int8["published"] or int8["reasons"]
    markdown = (folder / "model_card.md").read_text()
    for heading in ("## Calibration", "## Operating points", "## INT8 student", "### Warnings"):
        assert heading in markdown
    assert f"T = {trust['calibration']['temperature']:.4f}" in markdown
    with Image.open(folder / FILE_NAMES["reliability"]) as image:
        assert image.format == "PNG"


def test_the_bundle_verifies_and_a_tampered_model_fails(
    engine_run: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(engine_run["onnx"].parent, folder)
    bundle = json.loads((folder / "bundle.json").read_text())
    assert bundle["outputs"]["classes"] == engine_run["exported"].classes
    assert bundle["outputs"]["calibrated"] is True
    assert bundle["provenance"]["method"] == "ekd"
    assert len(bundle["provenance"]["dataset_content_hash"]) == 64
    assert verify_bundle(folder).passed
    passed = CliRunner().invoke(cli, ["verify-bundle", str(folder)])
    assert passed.exit_code == 0, passed.output
    assert "the bundle verifies" in passed.output

    model = folder / "student.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    result = verify_bundle(folder)
    assert not result.passed
    failed = {check.name for check in result.checks if not check.passed}
    assert "student.onnx" in failed
    assert "fp32 golden outputs" in failed
    refused = CliRunner().invoke(cli, ["verify-bundle", str(folder)])
    assert refused.exit_code == 1
    assert "FAIL student.onnx: sha256" in refused.output
    assert foprokd_cli(["verify-bundle", str(folder)]) == 1


def test_an_int8_model_published_by_always_says_which_limits_it_broke(
    engine_run: dict[str, Any],
) -> None:
    card = json.loads((engine_run["onnx"].parent / "model_card.json").read_text())
    card["trust"]["int8"].update(
        mode="always", published=True, reasons=["balanced accuracy drops by 3.00 points"]
    )
    markdown = render_markdown(card)
    assert (
        "Mode `always`: published as `student.int8.onnx`, although balanced accuracy drops by "
        "3.00 points." in markdown
    )
