"""Self-supervised pre-training of a small teacher on unlabelled images (a SimCLR-style
contrastive pretext: two augmented views of an image must match each other and no other image).

For when no pre-trained weights are at hand (``fopro demo`` on a machine with nothing installed):
it uses no labels, so a teacher made this way has seen nothing a real ImageNet teacher would not,
and callers must say that it is what it is. Not a replacement for published weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from foprokd.zoo import PixelNormalisation, backbone_feature_dim, create_backbone, resolve_spec

PROJECTION_DIM = 128
TEMPERATURE = 0.2


@dataclass(frozen=True)
class PretextProgress:
    """After each step: how far (seconds of the budget), and the batch's loss and top-1 match."""

    step: int
    seconds: float
    budget_s: float
    loss: float
    match_accuracy: float  # share of views whose nearest other view is their twin


@dataclass
class PretrainedBackbone:
    """The backbone (``num_classes=0`` timm model, eval mode) and what its pre-training did."""

    backbone: nn.Module
    arch: str
    steps: int
    seconds: float
    images: int
    final_loss: float
    final_match_accuracy: float


def two_views(images01: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1] -> (2B, 3, S, S): each image twice, independently augmented
    (random resized crop of 50-100 % of the side, flips, brightness/contrast, pixel noise)."""
    batch, _, size, _ = images01.shape
    views = []
    for _ in range(2):
        side = (size * (0.5 + 0.5 * torch.rand(batch, generator=generator))).long().clamp(min=4)
        crops = []
        for image, crop in zip(images01, side.tolist(), strict=True):
            top = int(torch.randint(0, size - crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, size - crop + 1, (1,), generator=generator))
            patch = image[:, top : top + crop, left : left + crop].unsqueeze(0)
            crops.append(F.interpolate(patch, size=(size, size), mode="bilinear"))
        view = torch.cat(crops)
        flip = torch.rand(batch, generator=generator) < 0.5
        view = torch.where(flip.view(-1, 1, 1, 1), view.flip(-1), view)
        flip = torch.rand(batch, generator=generator) < 0.5
        view = torch.where(flip.view(-1, 1, 1, 1), view.flip(-2), view)
        gain = 0.8 + 0.4 * torch.rand(batch, 1, 1, 1, generator=generator)
        shift = 0.1 * (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5)
        noise = 0.03 * torch.randn(view.shape, generator=generator)
        views.append((view * gain + shift + noise).clamp(0, 1))
    return torch.cat(views)


def contrastive_loss(
    z: torch.Tensor, temperature: float = TEMPERATURE
) -> tuple[torch.Tensor, float]:
    """NT-Xent over (2B, D) projections whose row i and i+B are views of one image.

    Returns the loss and the share of rows whose most similar other row is their twin.
    """
    z = F.normalize(z, dim=1)
    count = z.shape[0] // 2
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    twins = torch.cat([torch.arange(count, 2 * count), torch.arange(count)])
    loss = F.cross_entropy(similarity, twins)
    matched = (similarity.argmax(dim=1) == twins).float().mean().item()
    return loss, matched


def pretrain_contrastive(
    arch: str,
    images: torch.Tensor,
    *,
    budget_s: float,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    max_steps: int | None = None,
    on_progress: Callable[[PretextProgress], None] | None = None,
) -> PretrainedBackbone:
    """Train timm ``arch`` from random init on ``images`` (N, 3, S, S) uint8 for ``budget_s``
    seconds of wall time (or ``max_steps``), with no labels. Normalisation is the arch's own
    (its timm config), so the backbone drops into a ``FrozenTeacher`` of that spec."""
    if len(images) < 2:
        raise ValueError("contrastive pre-training needs at least 2 images")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    spec = resolve_spec(arch, "teacher")
    normalise = PixelNormalisation(spec.mean, spec.std)
    backbone = create_backbone(spec.timm_name, weights=None, allow_random=True)
    width = backbone_feature_dim(backbone)
    projection = nn.Sequential(
        nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, PROJECTION_DIM)
    )
    parameters = [*backbone.parameters(), *projection.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=lr)
    batch_size = min(batch_size, len(images))
    backbone.train()
    start = time.perf_counter()
    step, loss_value, matched = 0, float("nan"), 0.0
    while time.perf_counter() - start < budget_s and (max_steps is None or step < max_steps):
        index = torch.randperm(len(images), generator=generator)[:batch_size]
        views = two_views(images[index].float() / 255.0, generator)
        loss, matched = contrastive_loss(projection(backbone(normalise(views))))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 5.0)
        optimiser.step()
        step, loss_value = step + 1, float(loss.item())
        if on_progress is not None:
            elapsed = time.perf_counter() - start
            on_progress(PretextProgress(step, elapsed, budget_s, loss_value, matched))
    return PretrainedBackbone(
        backbone=backbone.eval(),
        arch=spec.timm_name,
        steps=step,
        seconds=time.perf_counter() - start,
        images=len(images),
        final_loss=loss_value,
        final_match_accuracy=matched,
    )
