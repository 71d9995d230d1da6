"""What a user takes home from a finished job, on both deployments with a real worker.

A team uploads its own teacher, a job distils a student from it, and then: every artifact
downloads with its recorded sha256, the ONNX and TorchScript files compute what the PyTorch
student computes, the model card's numbers are the engine's, and predictions through the API's
onnxruntime match the engine's PyTorch predictions (divided by the exported temperature). The
bundle verifies with ``fopro verify-bundle`` and a tampered model does not. A job naming a
teacher whose weights are not installed is refused at submit, with the path to fill.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from app.core.config import get_settings
from foprokd.calibration import softmax
from foprokd.data import LabelledImages
from foprokd.evaluation import predict
from foprokd.export import load_exported
from foprokd.image_cache import decode_image
from foprokd.synthetic import texture_image
from tests.integration.jobs.conftest import TEST_PARAMS, Deployment
from tests.unit.jobs.ready_dataset import auth

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEACHER_ARCH = "test_resnet"
ARTIFACTS = {
    "student.safetensors",
    "config.json",
    "student.onnx",
    "student.torchscript.pt",
    "model_card.json",
    "model_card.md",
    "training_curves.png",
    "reliability_diagram.png",
    "bundle.json",
    "bundle.sig.json",
    "golden_inputs.npy",
    "golden_outputs.npy",
}
INT8_ARTIFACTS = {"student.int8.onnx", "golden_outputs.int8.npy"}


def register_teacher(deployment: Deployment, tmp_path: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    weights = tmp_path / "derm-teacher.safetensors"
    save_file(timm.create_model(TEACHER_ARCH, num_classes=3).state_dict(), weights)
    with weights.open("rb") as handle:
        response = deployment.client.post(
            "/v1/teachers",
            headers=auth(deployment.key),
            data={"name": "derm-teacher", "arch": TEACHER_ARCH},
            files={"file": (weights.name, handle, "application/octet-stream")},
        )
    assert response.status_code == 201, (response.text, deployment.worker_logs())
    return dict(response.json())


def download_all(deployment: Deployment, job_id: str, into: Path) -> list[dict[str, Any]]:
    rows = deployment.client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth(deployment.key))
    assert rows.status_code == 200
    for row in rows.json():
        response = deployment.client.get(row["url"], headers=auth(deployment.key))
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == row["sha256"], row["name"]
        assert len(response.content) == row["bytes"]
        (into / row["name"]).write_bytes(response.content)
    return list(rows.json())


def verify_bundle(folder: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``fopro verify-bundle FOLDER [options]`` as clinic IT runs it."""
    command = [sys.executable, "-m", "fopro", "verify-bundle", str(folder), *options]
    return subprocess.run(command, capture_output=True, text=True, check=False)


# TorchScript is deprecated upstream, yet it is the format LibTorch deployments load.
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_finished_job_delivers_what_it_promises(deployment: Deployment, tmp_path: Path) -> None:
    deployment.start_worker()
    teacher = register_teacher(deployment, tmp_path)
    submitted = deployment.client.post(
        "/v1/jobs",
        json={
            "dataset_id": deployment.dataset_id,
            "teacher": teacher["name"],
            "student": "resnet18",
            "method": "ekd",
            "params": {**TEST_PARAMS, "epochs": 2},
        },
        headers=auth(deployment.key),
    )
    assert submitted.status_code == 201, submitted.text
    job = deployment.wait_terminal(submitted.json()["id"])
    assert job["status"] == "succeeded", (job, deployment.worker_logs())

    folder = tmp_path / "downloads"
    folder.mkdir()
    rows = download_all(deployment, job["id"], folder)
    card = json.loads((folder / "model_card.json").read_text())
    int8 = card["trust"]["int8"]
    # The INT8 student is published, or the card says why it was withheld.
    assert {r["name"] for r in rows} == ARTIFACTS | (INT8_ARTIFACTS if int8["published"] else set())
    assert int8["published"] or int8["reasons"]
    assert job["metrics"]["trust"]["int8"]["published"] == int8["published"]

    # Clinic IT proves its runtime gives the bundle's answers; a tampered model fails.
    verified = verify_bundle(folder)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    model = bytearray((tampered / "student.onnx").read_bytes())
    model[-100] ^= 0x01
    (tampered / "student.onnx").write_bytes(bytes(model))
    refused = verify_bundle(tampered)
    assert refused.returncode == 1
    assert "FAIL student.onnx" in refused.stdout

    # ... and that this service made it: signed with the key the service publishes at
    # /.well-known/fopro-signing-key (no API key needed), which a forged bundle.json cannot carry.
    published = deployment.client.get("/.well-known/fopro-signing-key")
    assert published.status_code == 200, published.text
    key_file = tmp_path / "signing-key.json"
    key_file.write_text(published.text)
    signature = json.loads((folder / "bundle.sig.json").read_text())
    assert signature["key_id"] == published.json()["key_id"]
    signed = verify_bundle(folder, "--public-key", str(key_file))
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert "ok   bundle.sig.json: valid signature" in signed.stdout
    forged = tmp_path / "forged"
    shutil.copytree(folder, forged)
    (forged / "bundle.json").write_text((forged / "bundle.json").read_text().replace(" ", "  "))
    unsigned = verify_bundle(forged, "--public-key", str(key_file))
    assert unsigned.returncode == 1
    assert "FAIL bundle.sig.json" in unsigned.stdout

    # The deployable formats compute what the PyTorch student computes.
    exported = load_exported(folder)
    x = torch.rand(5, 3, exported.image_size, exported.image_size)
    with torch.no_grad():
        reference = exported.classifier(x).numpy()
    session = onnxruntime.InferenceSession(str(folder / "student.onnx"))
    from_onnx = session.run(["logits"], {"image": x.numpy()})[0]
    assert np.abs(from_onnx - reference).max() <= 1e-4
    scripted = torch.jit.load(str(folder / "student.torchscript.pt"))
    with torch.no_grad():
        assert np.abs(scripted(x).numpy() - reference).max() <= 1e-4

    # The model card reports the engine's numbers.
    report = job["metrics"]["report"]
    assert card["evaluation"]["report"] == report
    assert card["training"]["best_epoch"] == job["metrics"]["best_epoch"]
    curves = deployment.get(f"/{job['id']}/metrics")["epochs"]
    assert [e["val_balanced_accuracy"] for e in card["training"]["history"]] == [
        e["val_balanced_accuracy"] for e in curves
    ]
    assert card["teacher"] == "derm-teacher"
    assert card["dataset"]["split"]["unit"] == "image"  # its manifest names no patient groups
    assert card["efficiency"]["teacher"]["params"] == teacher["num_params"]
    markdown = (folder / "model_card.md").read_text()
    assert f"| balanced_accuracy | {report['balanced_accuracy']:.4f} |" in markdown
    with Image.open(folder / "training_curves.png") as curves_png:
        assert curves_png.format == "PNG"

    # Predictions through the API's onnxruntime equal the engine's PyTorch predictions.
    rng = np.random.default_rng(5)
    images = []
    for index in range(4):
        path = folder / f"query-{index}.png"
        texture_image(index % len(exported.classes), len(exported.classes), rng, 48).save(path)
        images.append(path)
    answer = deployment.client.post(
        f"/v1/jobs/{job['id']}/predict?top_k={len(exported.classes)}",
        headers=auth(deployment.key),
        files=[("files", (p.name, p.read_bytes(), "image/png")) for p in images],
    )
    assert answer.status_code == 200, answer.text
    engine = predict(
        exported.classifier,
        LabelledImages(
            torch.from_numpy(np.stack([decode_image(p, exported.image_size) for p in images])),
            torch.zeros(len(images), dtype=torch.int64),
            exported.classes,
        ),
        device="cpu",
    )
    # The API applies the temperature of config.json: softmax(logits / T) of the engine.
    temperature = exported.config["temperature"]
    assert answer.json()["temperature"] == temperature
    with torch.no_grad():
        logits = exported.classifier(
            torch.from_numpy(np.stack([decode_image(p, exported.image_size) for p in images]))
            .float()
            .div(255.0)
        ).numpy()
    assert np.allclose(engine, softmax(logits, 1.0), atol=1e-5)
    engine = softmax(logits, temperature)
    for row, prediction in zip(engine, answer.json()["predictions"], strict=True):
        for score in prediction["top_k"]:
            assert score["probability"] == pytest.approx(float(row[score["index"]]), abs=1e-5)


def test_a_teacher_without_weights_is_refused_at_submit(deployment: Deployment) -> None:
    weights_dir = get_settings().weights_dir
    assert weights_dir is not None
    params = {key: value for key, value in TEST_PARAMS.items() if key != "allow_random_weights"}
    response = deployment.client.post(
        "/v1/jobs",
        json={
            "dataset_id": deployment.dataset_id,
            "teacher": "convnext_tiny",
            "student": "resnet18",
            "params": {**params, "epochs": 1},
        },
        headers=auth(deployment.key),
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "teacher_weights_missing"
    assert str(weights_dir / "convnext_tiny.safetensors") in error["message"]
    listed = deployment.client.get("/v1/jobs", headers=auth(deployment.key)).json()
    assert listed["total"] == 0
