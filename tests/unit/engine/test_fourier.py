"""foprokd.fourier: the spectral prompt is an identity at M = 1, keeps phase, and its step
trains only the generator and the probe."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from foprokd.fourier import (
    FourierPromptGenerator,
    FourierPromptLearner,
    apply_spectral_mask,
    radial_frequency,
)
from foprokd.losses import log_class_prior
from foprokd.student import Student
from foprokd.zoo import FrozenTeacher


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _head(generator: FourierPromptGenerator) -> torch.nn.Linear:
    """The generator's last layer, which produces the mask logits."""
    head = generator.net[-1]
    assert isinstance(head, torch.nn.Linear)
    return head


def _unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize(("height", "width"), [(32, 32), (17, 24), (16, 15)])
def test_fft_identity_at_unit_mask(height: int, width: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, height, width)
    ones = torch.ones(1, 3, height, width // 2 + 1)
    assert torch.allclose(apply_spectral_mask(x, ones, clamp=False), x, atol=1e-6)
    assert torch.allclose(apply_spectral_mask(x, ones, clamp=True), x, atol=1e-6)


def test_generator_with_zero_logits_returns_the_input() -> None:
    torch.manual_seed(0)
    generator = FourierPromptGenerator()
    with torch.no_grad():
        _head(generator).weight.zero_()
    x = torch.rand(4, 3, 24, 24)
    prompted = generator(x)
    assert torch.equal(prompted.mask, torch.ones_like(prompted.mask))
    assert torch.allclose(prompted.images, x, atol=1e-6)


def test_mask_shape_range_and_fresh_noise_per_image() -> None:
    torch.manual_seed(0)
    generator = FourierPromptGenerator(alpha=0.5, grid_size=(4, 3))
    with torch.no_grad():
        _head(generator).weight.mul_(50.0)  # saturate tanh to reach the bounds
    mask = generator.masks(5, 20, 20)
    assert mask.shape == (5, 3, 20, 11)
    assert mask.min() >= 0.5 - 1e-6
    assert mask.max() <= 1.5 + 1e-6
    assert (mask - 1).abs().max() > 0.4
    assert not torch.allclose(mask[0], mask[1])


def test_band_limits_leave_other_frequencies_untouched() -> None:
    torch.manual_seed(0)
    generator = FourierPromptGenerator(band=(0.2, 0.6))
    mask = generator.masks(2, 32, 32)
    radius = radial_frequency(32, 32)
    outside = (radius < 0.2) | (radius > 0.6)
    assert torch.equal(mask[:, :, outside], torch.ones_like(mask[:, :, outside]))
    assert not torch.allclose(mask[:, :, ~outside], torch.ones_like(mask[:, :, ~outside]))
    assert radius[0, 0] == 0
    assert radius[0, 16] == pytest.approx(1.0)


def test_prompt_scales_amplitudes_and_keeps_phase() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    mask = 1.0 + 0.5 * torch.tanh(torch.randn(2, 3, 16, 9))
    prompted = apply_spectral_mask(x, mask, clamp=False)
    before, after = torch.fft.rfft2(x), torch.fft.rfft2(prompted)
    # Self-conjugate bins (DC/Nyquist columns) are where irfft2 symmetrises; compare the rest.
    inner = (slice(None), slice(None), slice(None), slice(1, 8))
    assert torch.allclose(after.abs()[inner], (before.abs() * mask)[inner], atol=1e-4)
    significant = before.abs()[inner] > 1e-3
    assert torch.allclose(
        before.angle()[inner][significant], after.angle()[inner][significant], atol=1e-3
    )


def test_clamp_keeps_prompted_pixels_valid() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    amplify = torch.full((1, 3, 16, 9), 1.5)
    amplify[..., 0, 0] = 1.0  # keep the mean, amplify every other frequency
    assert apply_spectral_mask(x, amplify, clamp=False).max() > 1.0
    clamped = apply_spectral_mask(x, amplify, clamp=True)
    assert clamped.min() >= 0.0
    assert clamped.max() <= 1.0


def test_prompt_step_changes_only_the_generator_and_the_probe(
    tiny_teacher: FrozenTeacher, make_student: Callable[..., Student]
) -> None:
    torch.manual_seed(0)
    student = make_student(num_classes=3, teacher_dim=tiny_teacher.feature_dim)
    learner = FourierPromptLearner(
        FourierPromptGenerator(), tiny_teacher.feature_dim, log_class_prior([20, 8, 2])
    )
    x, y = torch.rand(6, 3, 16, 16), torch.tensor([0, 0, 1, 1, 2, 2])
    proj = student(x).proj
    teacher_before, student_before = _snapshot(tiny_teacher), _snapshot(student)
    generator_before, probe_before = _snapshot(learner.generator), _snapshot(learner.probe)

    terms = learner.step(tiny_teacher, x, y, student_proj=proj.detach())

    assert set(terms) == {"probe", "mask", "adversary"}
    assert _unchanged(tiny_teacher, teacher_before)
    assert _unchanged(student, student_before)
    assert all(p.grad is None for p in tiny_teacher.parameters())
    assert all(p.grad is None for p in student.parameters())
    assert not _unchanged(learner.generator, generator_before)
    assert not _unchanged(learner.probe, probe_before)
    teacher_ids = {id(p) for p in tiny_teacher.parameters()}
    optimised = {id(p) for g in learner.optimizer.param_groups for p in g["params"]}
    assert not optimised & teacher_ids
    assert optimised == {id(p) for p in learner.parameters()}


def test_prompted_target_has_no_gradient(tiny_teacher: FrozenTeacher) -> None:
    learner = FourierPromptLearner(
        FourierPromptGenerator(), tiny_teacher.feature_dim, log_class_prior([1, 1])
    )
    prompted = learner.prompt(torch.rand(2, 3, 16, 16))
    assert not prompted.requires_grad
