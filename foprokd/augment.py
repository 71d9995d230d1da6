"""The paper's training augmentation for whole uint8 batches on their own device.

Per sample, the parameters are drawn from the same distributions as the released code's
torchvision pipeline (``foprokd.reference.PilImageDataset``): ONE of {random scale, random
integer translation, random rotation}, colour jitter with its three factors applied in a random
order, then horizontal and vertical flips. A unit test compares the two samplers' distributions.

What differs is how they are applied: a batch at a time, on the batch's device, bilinear where
torchvision's default is nearest. On the CPU only the samples that need resampling (scale,
rotation) go through ``grid_sample``; translations and flips are exact, by indexing. Randomness
comes from the device's global RNG, so checkpointed RNG states replay the same augmentations on
resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from foprokd.data import to_unit_float

# ITU-R 601 luma weights, the grayscale used by torchvision's colour jitter.
_LUMA = (0.299, 0.587, 0.114)

SCALE, TRANSLATE, ROTATE = 0, 1, 2
BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2


@dataclass(frozen=True)
class AugmentParams:
    """One batch's draws (B samples), in torchvision's terms."""

    choice: torch.Tensor  # (B,) int64: SCALE, TRANSLATE or ROTATE
    scale: torch.Tensor  # (B,) zoom factor (used where choice == SCALE)
    shift: torch.Tensor  # (B, 2) int64 pixels (dx right, dy down), where choice == TRANSLATE
    angle_deg: torch.Tensor  # (B,) counter-clockwise degrees, where choice == ROTATE
    jitter: torch.Tensor  # (B, 3) brightness, contrast, saturation factors
    jitter_order: torch.Tensor  # (B, 3) int64, a permutation of the three jitter ops
    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor  # (B,) bool


class BatchAugment(nn.Module):
    """The paper's augmentation for a whole batch on its own device.

    Per sample: ONE random choice of {scale in ``scale``, translate by a whole number of pixels up
    to ``translate`` of the size (rounded, as torchvision does), rotate up to ±``rotate_deg``}
    (zero fill), colour jitter of strength ``jitter`` (brightness, contrast, saturation in a random
    order per sample), then random horizontal and vertical flips (p = 0.5 each). In ``eval()``
    mode it only converts to float.
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
        return self.augment_with(out, self.sample(out.shape[0], out.shape[-1], out.device))

    def sample(self, batch: int, size: int, device: torch.device) -> AugmentParams:
        """Draw ``batch`` samples' parameters from the device's global RNG."""
        lo, hi = self.scale
        max_shift = self.translate * size
        shift = torch.round((torch.rand(batch, 2, device=device) * 2 - 1) * max_shift)
        return AugmentParams(
            choice=torch.randint(0, 3, (batch,), device=device),
            scale=lo + (hi - lo) * torch.rand(batch, device=device),
            shift=shift.long(),
            angle_deg=(torch.rand(batch, device=device) * 2 - 1) * self.rotate_deg,
            jitter=1 + (torch.rand(batch, 3, device=device) * 2 - 1) * self.jitter,
            jitter_order=torch.rand(batch, 3, device=device).argsort(dim=1),
            hflip=torch.rand(batch, device=device) < 0.5,
            vflip=torch.rand(batch, device=device) < 0.5,
        )

    def augment_with(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augment float (B, 3, S, S) in [0, 1] with ``params``."""
        x = self._geometric(x, params)
        if self.jitter > 0:
            x = _colour_jitter(x, params.jitter, params.jitter_order)
        if self.hflip:
            x = _flip_where(x, params.hflip, dim=3)
        if self.vflip:
            x = _flip_where(x, params.vflip, dim=2)
        return x

    def _geometric(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        size = x.shape[-1]
        if x.device.type != "cpu":
            # One grid_sample for the whole batch (masks, not indexing: no host-device sync).
            # A whole-pixel shift lands on pixel centres, so bilinear reproduces it exactly.
            return _resample(x, _theta(params, size))
        out = x.clone()
        resample = torch.nonzero(params.choice != TRANSLATE).flatten()
        if resample.numel():
            subset = _select(params, resample)
            out[resample] = _resample(x[resample], _theta(subset, size))
        for i in torch.nonzero(params.choice == TRANSLATE).flatten().tolist():
            dx, dy = (int(v) for v in params.shift[i])
            out[i] = _shifted(x[i], dx, dy)
        return out


def _select(params: AugmentParams, index: torch.Tensor) -> AugmentParams:
    return AugmentParams(*(getattr(params, f)[index] for f in AugmentParams.__dataclass_fields__))


def _theta(params: AugmentParams, size: int) -> torch.Tensor:
    """(B, 2, 3) output→input maps for ``affine_grid`` (coordinates in [-1, 1])."""
    choice = params.choice
    one, zero = torch.ones_like(params.scale), torch.zeros_like(params.scale)
    # Zooming in by s reads the input at p / s.
    inv_scale = torch.where(choice == SCALE, 1.0 / params.scale, one)
    # A shift of d pixels is 2d / size in [-1, 1]; output p reads input p - d.
    tx, ty = (
        torch.where(choice == TRANSLATE, -2.0 * params.shift[:, i].to(one.dtype) / size, zero)
        for i in (0, 1)
    )
    # torchvision's angle turns the picture counter-clockwise on screen (y down).
    angle = torch.where(choice == ROTATE, params.angle_deg * (math.pi / 180), zero)
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    return torch.stack(
        [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
    )


def _resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _shifted(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """(3, S, S) moved ``dx`` right and ``dy`` down, zero fill (exact, by slicing)."""
    out = torch.zeros_like(image)
    height, width = image.shape[-2:]
    if abs(dx) >= width or abs(dy) >= height:
        return out
    out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        :, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def _colour_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """torchvision's brightness / contrast / saturation blends, each sample in its own order."""
    luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    view = (-1, 1, 1, 1)
    for position in range(3):
        op = order[:, position].view(view)
        factor = factors.gather(1, order[:, position : position + 1]).view(view)
        gray = (x * luma).sum(dim=1, keepdim=True)
        base = torch.where(
            op == BRIGHTNESS,
            torch.zeros_like(gray),
            torch.where(op == CONTRAST, gray.mean(dim=(2, 3), keepdim=True), gray),
        )
        x = (base + (x - base) * factor).clamp_(0, 1)
    return x


def _flip_where(x: torch.Tensor, mask: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Flip the samples where ``mask`` holds along ``dim``."""
    if x.device.type == "cpu":
        index = torch.nonzero(mask).flatten()
        if index.numel():
            x = x.clone()
            x[index] = x[index].flip(dim)
        return x
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(dim), x)
