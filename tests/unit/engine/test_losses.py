"""foprokd.losses: balanced softmax, the EKD cosine term and the FPG objective."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from foprokd.losses import (
    balanced_softmax_loss,
    cosine_distance_loss,
    cross_entropy_loss,
    ekd_losses,
    log_class_prior,
    prompt_losses,
)


def test_bsm_equals_ce_under_a_uniform_prior() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 5), torch.randint(0, 5, (16,))
    uniform = log_class_prior([7, 7, 7, 7, 7])
    assert torch.allclose(
        balanced_softmax_loss(logits, targets, uniform), cross_entropy_loss(logits, targets)
    )


def test_bsm_adds_the_log_prior_to_the_logits() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 3), torch.randint(0, 3, (16,))
    counts = [100, 10, 1]
    prior = torch.tensor(counts, dtype=torch.float32) / sum(counts)
    expected = F.cross_entropy(logits + prior.log(), targets)
    got = balanced_softmax_loss(logits, targets, log_class_prior(counts))
    assert torch.allclose(got, expected)
    assert not torch.allclose(got, cross_entropy_loss(logits, targets))


def test_log_prior_stays_finite_for_a_class_without_training_images() -> None:
    assert torch.isfinite(log_class_prior([50, 0, 3])).all()


def test_cosine_loss_lies_in_zero_to_four() -> None:
    torch.manual_seed(0)
    p, t = torch.randn(64, 32), torch.randn(64, 32)
    value = cosine_distance_loss(p, t).item()
    assert 0.0 <= value <= 4.0
    assert cosine_distance_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distance_loss(-t, t).item() == pytest.approx(4.0, abs=1e-6)
    assert cosine_distance_loss(3.0 * t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_ekd_terms_are_weighted_and_the_teacher_gets_no_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 4, requires_grad=True)
    proj = torch.randn(8, 16, requires_grad=True)
    proj_logits = torch.randn(8, 4, requires_grad=True)
    teacher = torch.randn(8, 16, requires_grad=True)
    targets = torch.randint(0, 4, (8,))
    prior = log_class_prior([40, 20, 5, 1])
    terms = ekd_losses(logits, proj, proj_logits, targets, teacher, prior, distill_weight=3.0)
    assert set(terms) == {"bsm", "bsm_proj", "distill"}
    assert terms["distill"].item() == pytest.approx(
        3.0 * cosine_distance_loss(proj, teacher).item()
    )
    torch.stack(list(terms.values())).sum().backward()
    assert teacher.grad is None
    assert proj.grad is not None
    assert logits.grad is not None
    assert proj_logits.grad is not None


def test_prompt_losses_subtract_the_disagreement_only_with_akd() -> None:
    torch.manual_seed(0)
    probe_logits, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    mask = 1.0 + 0.2 * torch.randn(8, 3, 16, 9)
    prior = log_class_prior([30, 10, 2])
    student_proj, prompted = torch.randn(8, 12), torch.randn(8, 12, requires_grad=True)

    explore = prompt_losses(probe_logits, targets, mask, prior, beta=2.0, gamma=0.5)
    assert set(explore) == {"probe", "mask"}
    assert explore["probe"].item() == pytest.approx(
        2.0 * balanced_softmax_loss(probe_logits, targets, prior).item()
    )
    assert explore["mask"].item() == pytest.approx(0.5 * ((mask - 1) ** 2).mean().item())

    adversarial = prompt_losses(
        probe_logits,
        targets,
        mask,
        prior,
        student_proj=student_proj,
        prompted_features=prompted,
        adversary_weight=1.5,
    )
    disagreement = cosine_distance_loss(student_proj, prompted).item()
    assert adversarial["adversary"].item() == pytest.approx(-1.5 * disagreement)
    assert math.isfinite(adversarial["adversary"].item())
