"""The label-free contrastive pretext the demo pre-trains its teacher with."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from foprokd.pretext import contrastive_loss, pretrain_contrastive, two_views
from foprokd.zoo import verify_weights
from tests.unit.engine.conftest import TINY_STUDENT


def test_two_views_are_augmented_copies_in_range() -> None:
    images = torch.rand(6, 3, 16, 16)
    views = two_views(images, torch.Generator().manual_seed(0))
    assert views.shape == (12, 3, 16, 16)
    assert 0.0 <= float(views.min()) <= float(views.max()) <= 1.0
    assert not torch.equal(views[:6], views[6:])  # the two views of an image differ


def test_the_loss_rewards_twins_that_match_and_no_one_else() -> None:
    torch.manual_seed(0)
    distinct = torch.randn(8, 32)
    matched_loss, matched = contrastive_loss(torch.cat([distinct, distinct]))
    shuffled_loss, _ = contrastive_loss(torch.cat([distinct, distinct[torch.randperm(8)]]))
    assert matched == 1.0
    assert matched_loss < shuffled_loss


def test_pretraining_uses_no_labels_and_yields_a_strictly_loadable_backbone(
    tmp_path: Path,
) -> None:
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    made = pretrain_contrastive(TINY_STUDENT, images, budget_s=60, batch_size=8, max_steps=3)
    assert made.steps == 3
    assert made.images == 10
    assert torch.isfinite(torch.tensor(made.final_loss))
    assert not made.backbone.training
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in made.backbone.state_dict().items()}, path)
    verify_weights(TINY_STUDENT, path)  # what POST /v1/teachers' worker check runs
