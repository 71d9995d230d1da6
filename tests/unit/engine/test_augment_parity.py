"""The engine's batched augmentation against the released code's torchvision transforms: the same
parameter distributions (``foprokd.reference.PilImageDataset``'s ``RandomChoice`` of affine /
translate / rotation, ``ColorJitter``, flips), and, for given parameters, the same pictures as
torchvision's functional ops with bilinear interpolation."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from foprokd.augment import ROTATE, SCALE, TRANSLATE, AugmentParams, BatchAugment

SIZE = 32
DRAWS = 20_000


def _one(choice: int, *, scale: float = 1.0, shift=(0, 0), angle: float = 0.0) -> AugmentParams:
    return AugmentParams(
        choice=torch.tensor([choice]),
        scale=torch.tensor([scale]),
        shift=torch.tensor([shift]),
        angle_deg=torch.tensor([angle]),
        jitter=torch.ones(1, 3),
        jitter_order=torch.tensor([[0, 1, 2]]),
        hflip=torch.tensor([False]),
        vflip=torch.tensor([False]),
    )


@pytest.fixture
def picture() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, SIZE, SIZE, generator=generator)


@pytest.mark.parametrize("angle", [30.0, -17.5, 44.0])
def test_rotation_matches_torchvision(picture: torch.Tensor, angle: float) -> None:
    ours = BatchAugment(jitter=0).augment_with(picture, _one(ROTATE, angle=angle))
    theirs = TF.rotate(picture, angle, interpolation=InterpolationMode.BILINEAR)
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("scale", [0.95, 1.07, 1.2])
def test_scale_matches_torchvision(picture: torch.Tensor, scale: float) -> None:
    ours = BatchAugment(jitter=0).augment_with(picture, _one(SCALE, scale=scale))
    theirs = TF.affine(picture, 0.0, [0, 0], scale, [0.0], interpolation=InterpolationMode.BILINEAR)
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("shift", [(2, -1), (-2, 2), (0, 1), (40, 0)])
def test_translation_is_exact_and_matches_torchvision(
    picture: torch.Tensor, shift: tuple[int, int]
) -> None:
    ours = BatchAugment(jitter=0).augment_with(picture, _one(TRANSLATE, shift=shift))
    assert torch.equal(ours, TF.affine(picture, 0.0, list(shift), 1.0, [0.0]))


def test_colour_jitter_matches_torchvision_in_each_order(picture: torch.Tensor) -> None:
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    factors = (1.2, 0.8, 1.15)
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        params = _one(TRANSLATE)
        params = AugmentParams(
            **{
                **params.__dict__,
                "jitter": torch.tensor([factors]),
                "jitter_order": torch.tensor([order]),
            }
        )
        expected = picture
        for op in order:
            expected = ops[op](expected, factors[op])
        assert torch.allclose(BatchAugment().augment_with(picture, params), expected, atol=1e-5)


def test_flips_follow_their_masks(picture: torch.Tensor) -> None:
    batch = picture.repeat(3, 1, 1, 1)
    params = AugmentParams(
        choice=torch.full((3,), TRANSLATE),
        scale=torch.ones(3),
        shift=torch.zeros(3, 2, dtype=torch.int64),
        angle_deg=torch.zeros(3),
        jitter=torch.ones(3, 3),
        jitter_order=torch.tensor([[0, 1, 2]] * 3),
        hflip=torch.tensor([True, False, True]),
        vflip=torch.tensor([False, True, True]),
    )
    out = BatchAugment(jitter=0).augment_with(batch, params)
    assert torch.equal(out[0], picture[0].flip(2))
    assert torch.equal(out[1], picture[0].flip(1))
    assert torch.equal(out[2], picture[0].flip(1).flip(2))


def _torchvision_draws(n: int) -> dict[str, np.ndarray]:
    """The released pipeline's own parameter samplers, ``n`` times each."""
    torch.manual_seed(0)
    random.seed(0)
    choice = [random.randrange(3) for _ in range(n)]  # what RandomChoice does (uniform)
    scale, shift, angle, jitter, order, hflip, vflip = [], [], [], [], [], [], []
    for _ in range(n):
        scale.append(
            transforms.RandomAffine.get_params([0.0, 0.0], None, [0.95, 1.2], None, [SIZE, SIZE])[2]
        )
        shift.append(
            transforms.RandomAffine.get_params([0.0, 0.0], [0.05, 0.05], None, None, [SIZE, SIZE])[
                1
            ]
        )
        angle.append(transforms.RandomRotation.get_params([-45.0, 45.0]))
        fn_idx, b, c, s, _ = transforms.ColorJitter.get_params(
            [0.75, 1.25], [0.75, 1.25], [0.75, 1.25], None
        )
        jitter.append((b, c, s))
        order.append(tuple(int(i) for i in fn_idx if int(i) < 3))
        hflip.append(bool(torch.rand(1) < 0.5))  # RandomHorizontalFlip / RandomVerticalFlip
        vflip.append(bool(torch.rand(1) < 0.5))
    return {
        "choice": np.array(choice),
        "scale": np.array(scale),
        "shift": np.array(shift),
        "angle": np.array(angle),
        "jitter": np.array(jitter),
        "order": np.array(order),
        "hflip": np.array(hflip),
        "vflip": np.array(vflip),
    }


def _engine_draws(n: int) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    p = BatchAugment().sample(n, SIZE, torch.device("cpu"))
    return {
        "choice": p.choice.numpy(),
        "scale": p.scale.numpy(),
        "shift": p.shift.numpy(),
        "angle": p.angle_deg.numpy(),
        "jitter": p.jitter.numpy(),
        "order": p.jitter_order.numpy(),
        "hflip": p.hflip.numpy(),
        "vflip": p.vflip.numpy(),
    }


def _frequencies(values: np.ndarray) -> dict[object, float]:
    counts = Counter(map(tuple, values) if values.ndim > 1 else values.tolist())
    return {k: v / len(values) for k, v in counts.items()}


def test_parameter_distributions_match_the_reference_transforms() -> None:
    ours, theirs = _engine_draws(DRAWS), _torchvision_draws(DRAWS)
    # Continuous draws: two-sample Kolmogorov–Smirnov (seeded, so the outcome is fixed).
    for name, column in [("scale", None), ("angle", None), *[("jitter", i) for i in range(3)]]:
        a = ours[name] if column is None else ours[name][:, column]
        b = theirs[name] if column is None else theirs[name][:, column]
        assert stats.ks_2samp(a, b).pvalue > 1e-3, (name, column)
    # Discrete draws: the same support and frequencies within 2 points (σ ≈ 0.4 points here).
    for name in ("choice", "shift", "order", "hflip", "vflip"):
        a, b = _frequencies(ours[name]), _frequencies(theirs[name])
        assert set(a) == set(b), (name, sorted(a), sorted(b))
        assert max(abs(a[k] - b[k]) for k in a) < 0.02, (name, a, b)
    # Whole-pixel translations up to round(0.05 * 32) = 2 pixels, as torchvision rounds them.
    assert set(np.unique(ours["shift"])) == {-2, -1, 0, 1, 2}


def test_a_ks_test_on_these_draws_would_catch_a_wrong_range() -> None:
    # The distribution check has teeth: a scale range off by 0.05 fails it.
    torch.manual_seed(0)
    wrong = BatchAugment(scale=(0.9, 1.2)).sample(DRAWS, SIZE, torch.device("cpu")).scale.numpy()
    assert stats.ks_2samp(wrong, _engine_draws(DRAWS)["scale"]).pvalue < 1e-6
