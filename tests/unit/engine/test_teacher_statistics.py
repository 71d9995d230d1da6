"""The FPG's teacher-statistics term: a Gaussian KL to BatchNorm running moments that is 0 on
the teacher's own domain, grows with a scanner-like gain, and whose gradient undoes that gain."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from foprokd.fourier import FourierPromptGenerator, FourierPromptLearner, TeacherStatistics
from foprokd.losses import gaussian_statistics_kl, log_class_prior
from foprokd.zoo import FrozenTeacher


def test_gaussian_kl_matches_a_hand_computed_case() -> None:
    zero = torch.zeros(2)
    assert gaussian_statistics_kl(zero, torch.ones(2), zero, torch.ones(2)).item() == 0.0
    # Channel 0: N(1, 1) vs N(0, 1) -> 0.5; channel 1: N(0, 4) vs N(0, 1) -> 0.5(3 − ln 4).
    value = gaussian_statistics_kl(
        torch.tensor([1.0, 0.0]), torch.tensor([1.0, 4.0]), zero, torch.ones(2)
    )
    expected = (0.5 + 0.5 * (3.0 - math.log(4.0))) / 2
    assert value.item() == pytest.approx(expected, rel=1e-4)


def _domain_teacher(images: torch.Tensor) -> FrozenTeacher:
    """A conv + BN teacher whose running moments are those of ``images`` (its training domain)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, momentum=None),  # cumulative average: exact moments of what it saw
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    backbone.num_features = 8  # type: ignore[assignment]
    teacher = FrozenTeacher(backbone, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    backbone.train()  # FrozenTeacher keeps itself in eval mode, not a backbone set apart
    with torch.no_grad():
        teacher(images)
    backbone.eval()
    return teacher


def _statistics_term(teacher: FrozenTeacher, x: torch.Tensor) -> torch.Tensor:
    with TeacherStatistics(teacher).collect() as terms:
        teacher(x)
    assert len(terms) == 1
    return terms[0]


def test_the_term_is_zero_on_the_teachers_domain_and_grows_with_a_colour_gain() -> None:
    torch.manual_seed(1)
    natural = torch.rand(64, 3, 12, 12)
    teacher = _domain_teacher(natural)
    gain = torch.tensor([1.0, 0.85, 0.72]).view(1, 3, 1, 1)
    # BN's running variance is unbiased (n/(n−1)), the batch's is not: a ~1e-4 residual.
    assert _statistics_term(teacher, natural).item() < 1e-3
    assert (
        _statistics_term(teacher, natural * gain).item()
        > 10 * _statistics_term(teacher, natural).item()
    )


def test_descending_the_term_undoes_a_per_channel_gain() -> None:
    torch.manual_seed(2)
    natural = torch.rand(64, 3, 12, 12)
    teacher = _domain_teacher(natural)
    shifted = natural * torch.tensor([1.0, 0.85, 0.72]).view(1, 3, 1, 1)
    correction = torch.ones(1, 3, 1, 1, requires_grad=True)
    optimiser = torch.optim.Adam([correction], lr=0.02)
    for _ in range(300):
        optimiser.zero_grad()
        _statistics_term(teacher, shifted * correction).backward()
        optimiser.step()
    inverse = torch.tensor([1.0, 1 / 0.85, 1 / 0.72])
    torch.testing.assert_close(correction.detach().flatten(), inverse, atol=0.03, rtol=0)
    assert all(p.grad is None for p in teacher.parameters())


def test_the_learner_adds_the_term_only_when_weighted(tiny_teacher: FrozenTeacher) -> None:
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 0, 1, 1])
    prior = log_class_prior([3, 1])
    plain = FourierPromptLearner(FourierPromptGenerator(), tiny_teacher.feature_dim, prior)
    assert set(plain.step(tiny_teacher, x, y)) == {"probe", "mask"}
    weighted = FourierPromptLearner(
        FourierPromptGenerator(),
        tiny_teacher.feature_dim,
        prior,
        statistics_weight=2.0,
        teacher=tiny_teacher,
    )
    terms = weighted.step(tiny_teacher, x, y)
    assert set(terms) == {"probe", "mask", "statistics"}
    assert terms["statistics"].item() > 0
    # The hooks are gone after the step: a plain forward appends nothing anywhere.
    assert all(not layer._forward_hooks for layer in weighted.statistics.layers)  # type: ignore[union-attr]


def test_a_teacher_without_batchnorm_is_refused_clearly() -> None:
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 14, 14]), nn.Flatten())
    with pytest.raises(ValueError, match="no BatchNorm running statistics"):
        TeacherStatistics(backbone)
