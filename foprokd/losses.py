"""Losses of the released EKD code and of the FPG/AKD formulation.

Every function returns a scalar (mean over the batch) computed in float32, also under autocast.
Dictionaries of named terms hold already-weighted terms, so their sum is the objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def log_class_prior(class_counts: Sequence[int]) -> torch.Tensor:
    """log(n_c / N) per class (C,), float32, from the training split's class counts.

    A class with no training image counts as one so the prior stays finite.
    """
    counts = torch.tensor([max(int(n), 1) for n in class_counts], dtype=torch.float64)
    return (counts / counts.sum()).log().to(torch.float32)


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain softmax cross-entropy. logits: (B, C); targets: (B,) int64 class indices."""
    return F.cross_entropy(logits.float(), targets)


def balanced_softmax_loss(
    logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor
) -> torch.Tensor:
    """Balanced softmax (Ren et al. 2020): cross-entropy on ``logits + log(prior)``.

    logits: (B, C) raw; targets: (B,) int64; log_prior: (C,) from ``log_class_prior``.
    Under a uniform prior this equals ``cross_entropy_loss``.
    """
    return F.cross_entropy(logits.float() + log_prior.to(logits.device), targets)


def cosine_distance_loss(
    student_proj: torch.Tensor, teacher_features: torch.Tensor
) -> torch.Tensor:
    """mean(2 - 2·cos(p, t)) over the batch, in [0, 4]. p, t: (B, D_t)."""
    cos = F.cosine_similarity(student_proj.float(), teacher_features.float(), dim=1, eps=1e-8)
    return (2.0 - 2.0 * cos).mean()


def gaussian_statistics_kl(
    mean: torch.Tensor, var: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor
) -> torch.Tensor:
    """Mean over channels of KL(N(mean, var) ‖ N(running_mean, running_var)), in float32.

    Scale-free, so layers with large and small activations weigh alike; 0 exactly when a batch's
    per-channel moments equal a BatchNorm layer's running statistics. All arguments: (C,).
    """
    eps = 1e-5
    var = var.float() + eps
    ref_var = running_var.float() + eps
    kl = 0.5 * (
        torch.log(ref_var / var)
        + (var + (mean.float() - running_mean.float()).square()) / ref_var
        - 1.0
    )
    return kl.mean()


def ekd_losses(
    logits: torch.Tensor,
    proj: torch.Tensor,
    proj_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_features: torch.Tensor,
    log_prior: torch.Tensor,
    *,
    distill_weight: float = 3.0,
) -> dict[str, torch.Tensor]:
    """The Effective KD objective as weighted terms (their sum is the loss).

    ``bsm``: BSM(fc(h), y); ``bsm_proj``: BSM(fc_proj(p), y); ``distill``: λ·mean(2 − 2·cos(p, t))
    with λ = ``distill_weight`` and the teacher features t detached.
    """
    return {
        "bsm": balanced_softmax_loss(logits, targets, log_prior),
        "bsm_proj": balanced_softmax_loss(proj_logits, targets, log_prior),
        "distill": distill_weight * cosine_distance_loss(proj, teacher_features.detach()),
    }


def prompt_losses(
    probe_logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    log_prior: torch.Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 0.1,
    student_proj: torch.Tensor | None = None,
    prompted_features: torch.Tensor | None = None,
    adversary_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The FPG step's objective as weighted terms (their sum is minimised over ψ and W_t).

    ``probe``: β·BSM(W_t f(x̃), y) keeps the prompted teacher features discriminative;
    ``mask``: γ·mean((M − 1)²) keeps the prompt near identity. With ``student_proj`` (AKD),
    ``adversary``: −w·mean(2 − 2·cos(p, f(x̃))) with p detached, so the generator seeks the
    frequencies where student and teacher still disagree.
    probe_logits: (B, C); mask: (B, 3, H, W//2+1); student_proj, prompted_features: (B, D_t).
    """
    terms = {
        "probe": beta * balanced_softmax_loss(probe_logits, targets, log_prior),
        "mask": gamma * (mask.float() - 1.0).square().mean(),
    }
    if student_proj is not None:
        if prompted_features is None:
            raise ValueError("the adversarial term needs the prompted teacher features")
        disagreement = cosine_distance_loss(student_proj.detach(), prompted_features)
        terms["adversary"] = -adversary_weight * disagreement
    return terms
