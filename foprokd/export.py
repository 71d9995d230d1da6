"""Export a trained student classifier to safetensors + config, TorchScript and ONNX.

Every format takes float32 RGB in [0, 1], shape (B, 3, S, S), already resized to S; the mean/std
normalisation is inside the graph (and recorded in config.json for documentation). Before any file
is moved into place, the TorchScript and ONNX files are reloaded from disk and compared with the
PyTorch model on random batches of 2 and 5 images; a mismatch raises ``ExportParityError`` and
leaves nothing behind.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from foprokd.atomic import atomic_paths
from foprokd.errors import ExportParityError
from foprokd.student import StudentClassifier, build_classifier

CONFIG_FORMAT = "foprokd-student"
CONFIG_VERSION = 1
ONNX_OPSET = 17
PARITY_BATCH_SIZES = (2, 5)
PARITY_TOLERANCE = 1e-4
INPUT_SPEC = "float32 RGB in [0,1], (B,3,S,S), normalisation inside the model"

FILE_NAMES: dict[str, str] = {
    "safetensors": "student.safetensors",
    "config": "config.json",
    "torchscript": "student.torchscript.pt",
    "onnx": "student.onnx",
}


@dataclass
class ExportedStudent:
    """A classifier rebuilt from an export folder, with the config it was exported with."""

    classifier: StudentClassifier
    classes: list[str]
    image_size: int
    config: dict[str, Any]


def export_student(
    classifier: nn.Module,
    *,
    classes: Sequence[str],
    image_size: int,
    arch: str,
    out_dir: Path,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Path]:
    """Write ``student.safetensors``, ``config.json``, ``student.torchscript.pt`` and
    ``student.onnx`` into ``out_dir``; return their paths keyed by ``FILE_NAMES``' kinds.

    ``classifier`` maps float [0, 1] RGB (B, 3, S, S) with S = ``image_size`` to logits
    (B, len(classes)), normalising with ``mean``/``std`` itself; they are recorded in the config
    and default to the classifier's own ``normalise`` module (a ``StudentClassifier``'s). It is
    copied to the CPU in eval mode; the caller's module is untouched. Raises
    ``ExportParityError`` when TorchScript or ONNX (opset 17, dynamic batch) differ from PyTorch
    by more than ``tolerance`` (max abs logit).
    """
    if mean is None or std is None:
        normalise = getattr(classifier, "normalise", None)
        if normalise is None:
            raise ValueError("pass mean and std: the classifier has no `normalise` module")
        mean = normalise.mean.flatten().tolist() if mean is None else mean
        std = normalise.std.flatten().tolist() if std is None else std
    model = copy.deepcopy(classifier).cpu().float().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = {kind: out_dir / name for kind, name in FILE_NAMES.items()}
    example = torch.zeros(2, 3, image_size, image_size)
    # Config last: its presence means the other three files are complete.
    order = ("safetensors", "torchscript", "onnx", "config")
    with atomic_paths([final[kind] for kind in order]) as temps:
        temp = dict(zip(order, temps, strict=True))
        with torch.no_grad():
            num_outputs = model(example).shape[1]
        if num_outputs != len(classes):
            raise ValueError(
                f"the classifier outputs {num_outputs} logits for {len(classes)} classes"
            )
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(temp["safetensors"]), metadata={"format": "pt", "arch": arch})
        _save_torchscript(model, example, temp["torchscript"])
        _save_onnx(model, example, temp["onnx"])
        parity = _check_parity(model, temp["torchscript"], temp["onnx"], image_size, tolerance)
        config: dict[str, Any] = {
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "arch": arch,
            "num_classes": len(classes),
            "classes": list(classes),
            "image_size": image_size,
            "input": {
                "name": "image",
                "dtype": "float32",
                "shape": ["batch", 3, image_size, image_size],
                "colour": "RGB",
                "range": [0.0, 1.0],
                "spec": INPUT_SPEC,
            },
            "output": {"name": "logits", "shape": ["batch", len(classes)], "kind": "raw logits"},
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "onnx_opset": ONNX_OPSET,
            "parity_max_abs_diff": parity,
            "files": {kind: path.name for kind, path in final.items() if kind != "config"},
            **dict(extra_config or {}),
        }
        temp["config"].write_text(json.dumps(config, indent=2))
    return final


def load_exported(out_dir: Path) -> ExportedStudent:
    """Rebuild the eval-mode CPU classifier of an export folder from safetensors + config.json."""
    config = json.loads((out_dir / FILE_NAMES["config"]).read_text())
    if config.get("format") != CONFIG_FORMAT:
        raise ValueError(f"{out_dir} does not hold a {CONFIG_FORMAT} export (config.json format)")
    classifier = build_classifier(config["arch"], int(config["num_classes"]))
    classifier.load_state_dict(load_file(str(out_dir / FILE_NAMES["safetensors"])), strict=True)
    return ExportedStudent(
        classifier=classifier.eval(),
        classes=list(config["classes"]),
        image_size=int(config["image_size"]),
        config=config,
    )


def _save_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream but remains the format C++/LibTorch deployments load.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))


def _save_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # The legacy exporter is deprecated but needs no onnxscript and is ~10x faster on CNNs.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )


def _check_parity(
    model: nn.Module, torchscript: Path, onnx: Path, image_size: int, tolerance: float
) -> dict[str, float]:
    """Max abs logit difference of each reloaded format vs PyTorch over the parity batches."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(torchscript), map_location="cpu").eval()
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    # A private generator: exporting must not shift the caller's global RNG stream.
    generator = torch.Generator().manual_seed(0)
    worst = {"torchscript": 0.0, "onnx": 0.0}
    for batch_size in PARITY_BATCH_SIZES:
        x = torch.rand(batch_size, 3, image_size, image_size, generator=generator)
        with torch.no_grad():
            reference = model(x).numpy()
            outputs = {
                "torchscript": scripted(x).numpy(),
                "onnx": np.asarray(session.run(["logits"], {"image": x.numpy()})[0]),
            }
        for export_format, output in outputs.items():
            if output.shape != reference.shape:
                raise ExportParityError(export_format, batch_size, float("inf"), tolerance)
            diff = float(np.abs(output - reference).max())
            if not diff <= tolerance:
                raise ExportParityError(export_format, batch_size, diff, tolerance)
            worst[export_format] = max(worst[export_format], diff)
    return worst
