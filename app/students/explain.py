"""What ``predict`` adds beyond top-k: findings at an operating point and occlusion heat maps.

Both run on the exported ONNX student in onnxruntime (no torch, no gradients). Findings compare
the calibrated probabilities with the per-class thresholds the engine chose on the validation
split (``config.json``'s ``operating_points``). Occlusion sensitivity (Zeiler & Fergus, 2014)
greys out one square patch at a time and records how much the predicted class's probability
drops: forward passes only, so its cost is bounded by counting them before any is run.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from app.core.errors import InvalidInput, PayloadTooLarge
from app.students.schemas import Explanation, Finding

DEFAULT_GRID = 8  # patches per side when the request names no patch size
OCCLUSION_BATCH = 32
# Colour stops of the heat map (no drop -> largest drop): black, red, yellow, white.
_STOPS = np.array([[0, 0, 0], [190, 30, 30], [250, 200, 40], [255, 255, 255]], dtype=np.float64)


class ProbabilityModel(Protocol):
    """What the explanations need of a loaded student (``StudentRuntime``)."""

    @property
    def classes(self) -> list[str]: ...

    @property
    def image_size(self) -> int: ...

    def probabilities(self, images: np.ndarray) -> np.ndarray: ...


class UnknownThresholdProfile(InvalidInput):
    code = "unknown_threshold_profile"


def check_profile(profile: str, thresholds: Mapping[str, Sequence[float | None]]) -> None:
    """Raise 422 naming the available profiles when ``profile`` is not one of them."""
    if profile not in thresholds:
        available = sorted(thresholds) or ["none: the student was exported without them"]
        raise UnknownThresholdProfile(
            f"threshold_profile {profile!r} is not in this student's config.json; "
            f"available: {', '.join(available)}.",
            details={"available": sorted(thresholds)},
        )


def findings(
    probabilities: np.ndarray, classes: Sequence[str], thresholds: Sequence[float | None]
) -> list[list[Finding]]:
    """Per image, the classes whose probability reaches their threshold (classes without a
    threshold, i.e. absent from the validation split, are never flagged), most probable first."""
    rows = []
    for row in probabilities:
        flagged = [
            Finding(label=classes[c], index=c, probability=float(row[c]), threshold=float(t))
            for c, t in enumerate(thresholds)
            if t is not None and row[c] >= t
        ]
        rows.append(sorted(flagged, key=lambda f: -f.probability))
    return rows


def occlusion_plan(image_size: int, patch: int | None, images: int, max_passes: int) -> int:
    """The patch size to use; raises 413 when ``images`` heat maps would need more than
    ``max_passes`` forward passes (one per patch plus one unoccluded, per image)."""
    size = patch if patch is not None else math.ceil(image_size / DEFAULT_GRID)
    if not 1 <= size <= image_size:
        raise InvalidInput(f"patch must be between 1 and the image size {image_size}, got {size}.")
    passes = images * (math.ceil(image_size / size) ** 2 + 1)
    if passes > max_passes:
        raise PayloadTooLarge(
            f"Occlusion maps for {images} image(s) with {size} px patches need {passes} forward "
            f"passes; the limit per request is {max_passes}. Send fewer images or a larger patch.",
            details={"passes": passes, "limit": max_passes},
        )
    return size


def occlusion_map(
    model: ProbabilityModel, image: np.ndarray, target: int, patch: int
) -> np.ndarray:
    """(G, G) drop of class ``target``'s probability when each patch of the float32 (3, S, S)
    [0, 1] ``image`` is filled with the image's per-channel mean (G = ceil(S / patch))."""
    size = image.shape[-1]
    grid = math.ceil(size / patch)
    fill = image.mean(axis=(1, 2), keepdims=True)
    occluded = np.repeat(image[None], grid * grid, axis=0)
    for k in range(grid * grid):
        top, left = (k // grid) * patch, (k % grid) * patch
        occluded[k, :, top : top + patch, left : left + patch] = fill
    base = float(model.probabilities(image[None])[0, target])
    scores = np.concatenate(
        [
            model.probabilities(occluded[i : i + OCCLUSION_BATCH])[:, target]
            for i in range(0, len(occluded), OCCLUSION_BATCH)
        ]
    )
    return (base - scores).reshape(grid, grid)


def heat_png(drops: np.ndarray, image_size: int) -> tuple[str, float]:
    """The positive drops as an S × S colour PNG (base64) scaled to the largest drop, and
    that largest drop (0 when no patch lowers the probability)."""
    scale = float(max(drops.max(), 0.0))
    levels = np.clip(drops, 0.0, None) / scale if scale > 0 else np.zeros_like(drops)
    patch = math.ceil(image_size / drops.shape[0])
    full = np.kron(levels, np.ones((patch, patch)))[:image_size, :image_size]
    position = full * (len(_STOPS) - 1)
    low = np.clip(np.floor(position).astype(np.int64), 0, len(_STOPS) - 2)
    frac = (position - low)[..., None]
    rgb = _STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac
    buffer = io.BytesIO()
    Image.fromarray(rgb.round().astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), scale


def explain_occlusion(
    model: ProbabilityModel, images: np.ndarray, probabilities: np.ndarray, patch: int
) -> list[Explanation]:
    """One heat map per float32 (N, 3, S, S) image for its most probable class."""
    out = []
    for image, row in zip(images, probabilities, strict=True):
        target = int(np.argmax(row))
        drops = occlusion_map(model, image, target, patch)
        png, scale = heat_png(drops, model.image_size)
        out.append(
            Explanation(
                method="occlusion",
                label=model.classes[target],
                index=target,
                patch=patch,
                passes=drops.size + 1,
                max_drop=scale,
                png_base64=png,
            )
        )
    return out
