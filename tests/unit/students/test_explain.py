"""Findings at an operating point and occlusion heat maps, on models whose answers are known."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from app.core.errors import InvalidInput, PayloadTooLarge
from app.students.explain import (
    UnknownThresholdProfile,
    check_profile,
    explain_occlusion,
    findings,
    occlusion_plan,
)

SIZE = 32


class CornerModel:
    """Class 1's logit is the brightness of the top-left 8 x 8 corner: only it matters."""

    classes = ["background", "lesion"]  # noqa: RUF012
    image_size = SIZE

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        corner = images[:, :, :8, :8].mean(axis=(1, 2, 3))
        logits = np.stack([np.full_like(corner, 0.5), 10.0 * corner], axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def test_the_heat_map_points_at_the_evidence() -> None:
    image = np.full((3, SIZE, SIZE), 0.1, dtype=np.float32)
    image[:, :8, :8] = 1.0
    model = CornerModel()
    probabilities = model.probabilities(image[None])
    [explanation] = explain_occlusion(model, image[None], probabilities, patch=8)
    assert explanation.label == "lesion"
    assert explanation.passes == 17  # a 4 x 4 grid plus the unoccluded image
    assert explanation.max_drop > 0.2  # filled with the image mean, the corner logit falls
    with Image.open(io.BytesIO(base64.b64decode(explanation.png_base64))) as png:
        assert png.size == (SIZE, SIZE)
        heat = np.asarray(png.convert("L"), dtype=np.float64)
    assert heat[:8, :8].min() == 255  # the largest drop is drawn white
    assert heat[8:, :].max() == 0  # patches that do not matter stay black
    assert heat[:, 8:].max() == 0


def test_findings_flag_classes_at_their_thresholds() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.55, 0.3, 0.15]])
    rows = findings(probabilities, ["a", "b", "c"], [0.5, 0.25, None])
    assert [[f.label for f in row] for row in rows] == [["a"], ["a", "b"]]
    assert rows[1][0].threshold == 0.5  # most probable first; c has no threshold: never flagged


def test_unknown_profile_names_the_available_ones() -> None:
    check_profile("sens90", {"sens90": [0.1]})
    with pytest.raises(UnknownThresholdProfile, match="available: sens90, sens95"):
        check_profile("sens99", {"sens90": [0.1], "sens95": [0.1]})


def test_occlusion_cost_is_capped() -> None:
    assert occlusion_plan(SIZE, None, images=2, max_passes=200) == 4  # S / 8 by default
    assert occlusion_plan(SIZE, 16, images=10, max_passes=50) == 16  # 10 x (4 + 1) passes
    with pytest.raises(PayloadTooLarge, match="need 1025 forward passes"):
        occlusion_plan(SIZE, 1, images=1, max_passes=1024)
    with pytest.raises(InvalidInput, match="patch must be between"):
        occlusion_plan(SIZE, SIZE + 1, images=1, max_passes=1024)
