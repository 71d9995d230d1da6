"""The paper's training augmentation for whole uint8 batches on their own device.

One random affine (scale, translate or rotate), colour jitter and flips per sample, drawn from
the device's global RNG so checkpointed RNG states replay the same augmentations on resume.
``foprokd.reference`` holds the torchvision equivalent the released code uses per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from foprokd.data import to_unit_float

# ITU-R 601 luma weights, the grayscale used by torchvision's colour jitter.
_LUMA = (0.299, 0.587, 0.114)


class BatchAugment(nn.Module):
    """The paper's augmentation for a whole batch on its own device.

    Per sample: ONE random choice of {scale in ``scale``, translate up to ``translate`` of the size,
    rotate up to ±``rotate_deg``} (one affine_grid/grid_sample, zero fill), colour jitter of
    strength ``jitter`` (brightness, contrast, saturation, applied in that order), then random
    horizontal and vertical flips (p = 0.5 each). Randomness comes from the *global* torch RNG of
    ``x.device``, so restoring checkpointed RNG states reproduces the same augmentations.
    In ``eval()`` mode it only converts to float.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.95, 1.2),
        translate: float = 0.05,
        rotate_deg: float = 45.0,
        jitter: float = 0.25,
        hflip: bool = True,
        vflip: bool = True,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.translate = translate
        self.rotate_deg = rotate_deg
        self.jitter = jitter
        self.hflip = hflip
        self.vflip = vflip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> augmented float32 (B, 3, S, S) in [0, 1] on ``x.device``."""
        out = to_unit_float(x)
        if not self.training or out.shape[0] == 0:
            return out
        out = self._random_affine(out)
        if self.jitter > 0:
            out = self._colour_jitter(out)
        if self.hflip:
            out = _flip_where(out, dim=3)
        if self.vflip:
            out = _flip_where(out, dim=2)
        return out

    def _random_affine(self, x: torch.Tensor) -> torch.Tensor:
        b, device = x.shape[0], x.device
        choice = torch.randint(0, 3, (b,), device=device)
        lo, hi = self.scale
        scale = lo + (hi - lo) * torch.rand(b, device=device)
        # affine_grid works in [-1, 1] coordinates, so a shift of t·size is 2t there.
        shift = (torch.rand(b, 2, device=device) * 2 - 1) * (2 * self.translate)
        angle = (torch.rand(b, device=device) * 2 - 1) * math.radians(self.rotate_deg)

        # Masks instead of boolean indexing: no host-device sync on CUDA.
        one, zero = torch.ones_like(scale), torch.zeros_like(scale)
        # theta maps output to input coordinates: zooming in by s reads input at p / s.
        inv_scale = torch.where(choice == 0, 1.0 / scale, one)
        tx, ty = (torch.where(choice == 1, -shift[:, i], zero) for i in (0, 1))
        cos = torch.where(choice == 2, torch.cos(angle), one) * inv_scale
        sin = torch.where(choice == 2, torch.sin(angle), zero) * inv_scale
        theta = torch.stack(
            [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
        )

        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _colour_jitter(self, x: torch.Tensor) -> torch.Tensor:
        b, device = x.shape[0], x.device
        factors = 1 + (torch.rand(3, b, 1, 1, 1, device=device) * 2 - 1) * self.jitter
        brightness, contrast, saturation = factors[0], factors[1], factors[2]
        luma = torch.tensor(_LUMA, device=device, dtype=x.dtype).view(1, 3, 1, 1)

        x = (x * brightness).clamp_(0, 1)
        mean_gray = (x * luma).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        x = (mean_gray + (x - mean_gray) * contrast).clamp_(0, 1)
        gray = (x * luma).sum(dim=1, keepdim=True)
        return (gray + (x - gray) * saturation).clamp_(0, 1)


def _flip_where(x: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Flip each sample along ``dim`` with probability 0.5 (global RNG of ``x.device``)."""
    mask = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(dim), x)
