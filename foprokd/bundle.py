"""A self-describing deployment bundle: ``bundle.json`` + golden inputs and their outputs.

``bundle.json`` says what a clinic's runtime must feed the model (shape, dtype, value range,
channel order, mean/std, resize policy) and what comes out (class names in order, whether the
probabilities are calibrated and with which temperature), with the software versions and the
run's provenance (dataset content hash, split seed, teacher, method, hyper-parameters). Golden
files hold a few real evaluated images and the logits this export computed for them, so clinic
IT can prove their runtime gives the same answers: ``verify_bundle`` (``fopro verify-bundle``)
checks every file's sha256 and re-runs the golden inputs with onnxruntime and numpy alone.
Torch-free.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from foprokd.atomic import write_json_atomic
from foprokd.images import RESIZE_POLICY
from foprokd.quantize import onnx_logits, stratified_sample
from foprokd.signing import SIGNATURE_FILE, check_signature

BUNDLE_FORMAT = "foprokd-bundle"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
GOLDEN_INPUTS = "golden_inputs.npy"
GOLDEN_OUTPUTS = {"fp32": "golden_outputs.npy", "int8": "golden_outputs.int8.npy"}
GOLDEN_IMAGES = 8
# FP32: another CPU or onnxruntime build reorders float sums (parity with PyTorch is ~1e-6).
FP32_TOLERANCE = 1e-3
# INT8 kernels differ between CPUs (VNNI or not): a share of the logit range, plus the same class.
INT8_RELATIVE_TOLERANCE = 0.05
_SOFTWARE = ("numpy", "onnx", "onnxruntime", "torch", "timm", "fopro-kd-service")


def file_digest(path: Path) -> dict[str, Any]:
    """``{"sha256": lowercase hex, "bytes": size}`` of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def software_versions() -> dict[str, str | None]:
    """Python and the installed versions of the packages the export depends on."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _SOFTWARE:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_bundle(
    out_dir: Path,
    *,
    config: Mapping[str, Any],
    images: np.ndarray,
    labels: Sequence[int],
    models: Mapping[str, Path],
    provenance: Mapping[str, Any],
    count: int = GOLDEN_IMAGES,
    other_files: Sequence[Path] = (),
) -> list[Path]:
    """Write the golden files and ``bundle.json`` (last) into ``out_dir``; return their paths.

    ``config``: the export's ``config.json``; ``images``: uint8 (N, 3, S, S) evaluated images
    (up to ``count`` are picked, classes in turn) with their ``labels``; ``models``: ``fp32``
    (and ``int8`` when published) ONNX files in ``out_dir``; ``other_files`` (the other
    exports) are hashed too, so ``verify_bundle`` notices any changed file.
    """
    pick = stratified_sample(labels, count)
    golden = np.ascontiguousarray(images[pick])
    inputs = golden.astype(np.float32) / np.float32(255.0)
    written = [out_dir / GOLDEN_INPUTS]
    np.save(written[0], inputs)
    for kind in GOLDEN_OUTPUTS.keys() - models.keys():  # an earlier export's, now withheld
        (out_dir / GOLDEN_OUTPUTS[kind]).unlink(missing_ok=True)
    tolerances: dict[str, dict[str, Any]] = {}
    for kind, model in models.items():
        logits = onnx_logits(model, golden)
        np.save(out_dir / GOLDEN_OUTPUTS[kind], logits)
        written.append(out_dir / GOLDEN_OUTPUTS[kind])
        tolerances[kind] = (
            {"max_abs": FP32_TOLERANCE, "same_top1": True}
            if kind == "fp32"
            else {
                "max_abs": INT8_RELATIVE_TOLERANCE * float(np.ptp(logits) or 1.0),
                "same_top1": True,
            }
        )
    config_path = out_dir / "config.json"
    files = {
        path.name: file_digest(path)
        for path in [config_path, *models.values(), *other_files, *written]
    }
    temperature = config.get("temperature")
    image_size = int(config["image_size"])
    bundle = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": {
            "name": config["input"]["name"],
            "shape": ["batch", 3, image_size, image_size],
            "layout": "NCHW",
            "dtype": "float32",
            "value_range": [0.0, 1.0],
            "channel_order": "RGB",
            "mean": config["mean"],
            "std": config["std"],
            "normalisation": "inside the model: do not subtract mean or divide by std yourself",
            "resize_policy": config.get("resize_policy", RESIZE_POLICY),
            "resize": f"whole image to {image_size}x{image_size}, bilinear with antialias, no "
            "crop; EXIF orientation applied, grayscale replicated to RGB, alpha dropped",
        },
        "outputs": {
            "name": config["output"]["name"],
            "kind": "raw logits",
            "classes": list(config["classes"]),
            "calibrated": temperature is not None,
            "temperature": temperature,
            "probabilities": "softmax(logits / temperature)"
            if temperature is not None
            else "softmax(logits)",
            "threshold_profiles": sorted((config.get("operating_points") or {}).keys()),
        },
        "models": {kind: path.name for kind, path in models.items()},
        "golden": {
            "inputs": GOLDEN_INPUTS,
            "outputs": {kind: GOLDEN_OUTPUTS[kind] for kind in models},
            "count": len(golden),
            "labels": [str(config["classes"][int(labels[i])]) for i in pick],
            "tolerance": tolerances,
        },
        "files": files,
        "software": software_versions(),
        "provenance": dict(provenance),
    }
    write_json_atomic(out_dir / BUNDLE_FILE, bundle)
    return [*written, out_dir / BUNDLE_FILE]


@dataclass
class BundleCheck:
    """One verification step: what was checked, whether it passed, and the detail."""

    name: str
    passed: bool
    detail: str


@dataclass
class BundleVerification:
    checks: list[BundleCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


def verify_bundle(
    folder: Path, trusted_keys: Sequence[Ed25519PublicKey] | None = None
) -> BundleVerification:
    """Check a bundle folder with onnxruntime and numpy alone: every file in ``bundle.json``
    has its recorded size and sha256, and every model reproduces its golden outputs on the
    golden inputs within the recorded tolerance (and the same top-1 class).

    With ``trusted_keys`` (the service's public signing key), ``bundle.sig.json`` must also be a
    valid signature of ``bundle.json`` by one of them: the files are then the ones the service
    produced, not merely consistent with a ``bundle.json`` anyone could have rewritten."""
    result = BundleVerification()
    if trusted_keys is not None:
        signed = check_signature(folder, list(trusted_keys))
        result.checks.append(BundleCheck(SIGNATURE_FILE, signed.passed, signed.detail))
    elif (folder / SIGNATURE_FILE).exists():
        result.checks.append(
            BundleCheck(
                SIGNATURE_FILE,
                True,
                "present, not checked: pass the service's public key to check who made this bundle",
            )
        )
    try:
        bundle = json.loads((folder / BUNDLE_FILE).read_text())
    except (OSError, ValueError) as exc:
        result.checks.append(BundleCheck(BUNDLE_FILE, False, f"cannot read it: {exc}"))
        return result
    if bundle.get("format") != BUNDLE_FORMAT:
        result.checks.append(BundleCheck(BUNDLE_FILE, False, f"not a {BUNDLE_FORMAT} file"))
        return result
    intact: set[str] = set()
    for name, expected in bundle["files"].items():
        path = folder / name
        if not path.is_file():
            result.checks.append(BundleCheck(name, False, "missing"))
            continue
        actual = file_digest(path)
        ok = actual == expected
        if ok:
            intact.add(name)
        result.checks.append(
            BundleCheck(
                name,
                ok,
                "sha256 matches"
                if ok
                else f"sha256 {actual['sha256'][:12]}… differs from bundle.json's "
                f"{expected['sha256'][:12]}…: the file was changed or damaged",
            )
        )
    golden = bundle["golden"]
    if golden["inputs"] not in intact:
        return result
    inputs = np.load(folder / golden["inputs"])
    for kind, model in bundle["models"].items():
        expected_name = golden["outputs"][kind]
        if model not in intact or expected_name not in intact:
            result.checks.append(
                BundleCheck(f"{kind} golden outputs", False, "skipped: a file failed its hash")
            )
            continue
        expected = np.load(folder / expected_name)
        try:
            got = onnx_logits(folder / model, inputs)
        except Exception as exc:  # onnxruntime raises plain exceptions for unloadable models
            result.checks.append(BundleCheck(f"{kind} golden outputs", False, f"{exc}"))
            continue
        tolerance = golden["tolerance"][kind]
        diff = float(np.abs(got - expected).max())
        same = bool((got.argmax(axis=1) == expected.argmax(axis=1)).all())
        ok = diff <= tolerance["max_abs"] and (same or not tolerance["same_top1"])
        result.checks.append(
            BundleCheck(
                f"{kind} golden outputs",
                ok,
                f"max |logit difference| {diff:.3g} (tolerance {tolerance['max_abs']:.3g}); "
                f"top-1 {'agrees' if same else 'DIFFERS'} on {len(expected)} images",
            )
        )
    return result
