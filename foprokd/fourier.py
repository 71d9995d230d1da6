"""The Fourier Prompt Generator (FPG) and its training step.

The FPG re-weights the amplitude spectrum of the teacher's input: ``x̃ = irfft2(M ⊙ rfft2(x))``
with a real, positive mask ``M = 1 + α·tanh(G_ψ(z, e))`` per channel and frequency, so phase is
kept and amplitudes are amplified or diminished. It acts on [0, 1] pixels, before the teacher's
own normalisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from foprokd.losses import gaussian_statistics_kl, prompt_losses
from foprokd.zoo import FrozenTeacher


class PromptedImages(NamedTuple):
    """A batch after the FPG: ``images`` (B, 3, H, W) in [0, 1] (when clamped) and the ``mask``
    (B, 3, H, W//2+1) that produced them, on the ``rfft2`` grid."""

    images: torch.Tensor
    mask: torch.Tensor


def radial_frequency(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised radial frequency on the ``rfft2`` grid, (H, W//2+1): 0 at DC, 1 at Nyquist
    along an axis (√2 in the corner)."""
    fy = torch.fft.fftfreq(height, device=device)
    fx = torch.fft.rfftfreq(width, device=device)
    return torch.sqrt(fy[:, None].square() + fx[None, :].square()) / 0.5


def apply_spectral_mask(x01: torch.Tensor, mask: torch.Tensor, *, clamp: bool) -> torch.Tensor:
    """``irfft2(mask ⊙ rfft2(x), s=(H, W))`` in float32.

    x01: (B, 3, H, W) float in [0, 1]; mask: (B or 1, 3, H, W//2+1) real. With ``clamp`` the
    result is clipped to [0, 1]: the teacher only ever saw valid pixels.
    """
    height, width = x01.shape[-2:]
    spectrum = torch.fft.rfft2(x01.float(), norm="backward")
    prompted = torch.fft.irfft2(spectrum * mask.float(), s=(height, width), norm="backward")
    return prompted.clamp(0.0, 1.0) if clamp else prompted


def mask_from_logits(
    logits: torch.Tensor,
    height: int,
    width: int,
    *,
    alpha: float,
    band: tuple[float, float] | None = None,
) -> torch.Tensor:
    """The FPG's mask family: coarse logits (B, C, gh, gw) -> M = 1 + α·tanh(·) on the ``rfft2``
    grid (B, C, H, W//2+1). The coarse grid is laid out with centred vertical frequencies and
    upsampled bilinearly; outside ``band`` (radial frequency range) M = 1."""
    dense = F.interpolate(
        logits, size=(height, width // 2 + 1), mode="bilinear", align_corners=True
    )
    # Undo the centring after the upsampling, so neighbouring frequencies get similar gains.
    gain = alpha * torch.tanh(torch.fft.ifftshift(dense, dim=-2))
    if band is not None:
        radius = radial_frequency(height, width, device=gain.device)
        gain = gain * ((radius >= band[0]) & (radius <= band[1])).to(gain.dtype)
    return 1.0 + gain


class FourierPromptGenerator(nn.Module):
    """G_ψ: noise z ~ N(0, I) + a learned dataset embedding -> a spectral mask per image.

    An MLP maps [z, e] to mask logits on a coarse ``grid_size`` grid over (vertical frequency,
    centred; horizontal frequency 0..Nyquist) per channel, which is upsampled bilinearly to the
    ``rfft2`` grid, so neighbouring frequencies get similar gains. ``band = (r_low, r_high)``
    limits the prompt to that range of ``radial_frequency``; outside it M = 1.
    ``clamp`` clips prompted pixels to [0, 1] (see ``apply_spectral_mask``).
    """

    def __init__(
        self,
        *,
        channels: int = 3,
        noise_dim: int = 64,
        embed_dim: int = 64,
        hidden_dim: int = 256,
        grid_size: tuple[int, int] = (16, 9),
        alpha: float = 0.5,
        band: tuple[float, float] | None = None,
        clamp: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1) so the mask stays positive, got {alpha}")
        if band is not None and not 0.0 <= band[0] < band[1]:
            raise ValueError(f"band must be (r_low, r_high) with 0 <= r_low < r_high, got {band}")
        self.channels = channels
        self.noise_dim = noise_dim
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.alpha = alpha
        self.band = band
        self.clamp = clamp
        self.embedding = nn.Parameter(torch.randn(embed_dim) * 0.02)
        head = nn.Linear(hidden_dim, channels * self.grid_size[0] * self.grid_size[1])
        # Zero bias: the average prompt starts at M = 1 and only the noise moves it away.
        nn.init.zeros_(head.bias)
        self.net = nn.Sequential(
            nn.Linear(noise_dim + embed_dim, hidden_dim), nn.ReLU(inplace=True), head
        )

    def mask_logits(self, batch_size: int) -> torch.Tensor:
        """G_ψ(z, e) on the coarse grid, (B, channels, gh, gw); z from the global RNG."""
        z = torch.randn(batch_size, self.noise_dim, device=self.embedding.device)
        inputs = torch.cat([z, self.embedding.expand(batch_size, -1)], dim=1)
        return self.net(inputs).view(batch_size, self.channels, *self.grid_size)

    def masks(self, batch_size: int, height: int, width: int) -> torch.Tensor:
        """M = 1 + α·tanh(G) on the ``rfft2`` grid, (B, channels, H, W//2+1), in [1−α, 1+α]."""
        return mask_from_logits(
            self.mask_logits(batch_size), height, width, alpha=self.alpha, band=self.band
        )

    def forward(self, x01: torch.Tensor) -> PromptedImages:
        """x01: (B, 3, H, W) float in [0, 1] -> prompted images with a fresh mask per image."""
        # FFTs and the mask stay float32 under autocast: bf16 FFTs are not supported/accurate.
        with torch.autocast(device_type=x01.device.type, enabled=False):
            mask = self.masks(x01.shape[0], x01.shape[-2], x01.shape[-1])
            return PromptedImages(apply_spectral_mask(x01, mask, clamp=self.clamp), mask)


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class TeacherStatistics:
    """The teacher's own record of its training domain: every BatchNorm layer's running moments.

    ``collect`` hooks those layers for one forward pass and gathers, per layer, the KL divergence
    between the batch's per-channel moments at the layer's input and the running ones (as
    DeepInversion matches them to synthesise data). As a prompt term it pulls what the teacher
    sees through the prompt toward what it saw in training, i.e. toward undoing a scanner's shift.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.layers = [
            module
            for module in teacher.modules()
            if isinstance(module, _BATCH_NORMS)
            and module.running_mean is not None
            and module.running_var is not None
        ]
        if not self.layers:
            raise ValueError(
                "the teacher has no BatchNorm running statistics (e.g. a ViT with LayerNorm): "
                "fpg_statistics_weight must be 0 for it"
            )

    @contextmanager
    def collect(self) -> Iterator[list[torch.Tensor]]:
        """Within the block, each hooked layer's forward appends its KL term (a scalar)."""
        terms: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            running_mean, running_var = module.running_mean, module.running_var
            assert isinstance(running_mean, torch.Tensor)
            assert isinstance(running_var, torch.Tensor)
            x = inputs[0].float()
            var, mean = torch.var_mean(x, dim=[0, *range(2, x.dim())], unbiased=False)
            terms.append(gaussian_statistics_kl(mean, var, running_mean, running_var))

        handles = [layer.register_forward_hook(hook) for layer in self.layers]
        try:
            yield terms
        finally:
            for handle in handles:
                handle.remove()


class FourierPromptLearner(nn.Module):
    """The FPG step: the generator, a linear probe W_t on teacher features and their own Adam.

    Each ``step`` minimises ``β·BSM(W_t f(x̃), y) + γ·mean((M−1)²)`` and, when given the
    student's projection (AKD), also ``− w·mean(2 − 2·cos(p, f(x̃)))``. With a
    ``statistics_weight`` δ > 0 (this engine's addition, off by default) it also minimises
    ``δ·mean_l KL(moments of x̃ at BN layer l ‖ its running moments)`` (``TeacherStatistics``).
    Gradients flow through the frozen teacher into ψ; the teacher's weights are never in the
    optimiser.
    """

    log_prior: torch.Tensor

    def __init__(
        self,
        generator: FourierPromptGenerator,
        teacher_dim: int,
        log_prior: torch.Tensor,
        *,
        lr: float = 1e-3,
        beta: float = 1.0,
        gamma: float = 0.1,
        adversary_weight: float = 1.0,
        steps: int = 1,
        statistics_weight: float = 0.0,
        teacher: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if statistics_weight > 0 and teacher is None:
            raise ValueError(
                "the statistics term needs the teacher whose BatchNorm layers it reads"
            )
        self.statistics_weight = statistics_weight
        self.statistics = (
            TeacherStatistics(teacher) if statistics_weight > 0 and teacher is not None else None
        )
        self.generator = generator
        self.probe = nn.Linear(teacher_dim, log_prior.numel())
        self.register_buffer("log_prior", log_prior.detach().clone())
        self.beta = beta
        self.gamma = gamma
        self.adversary_weight = adversary_weight
        self.steps = steps
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)

    def step(
        self,
        teacher: FrozenTeacher,
        x01: torch.Tensor,
        targets: torch.Tensor,
        student_proj: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run ``steps`` optimiser steps on ψ and W_t; returns the last step's detached terms.

        x01: (B, 3, H, W) in [0, 1]; targets: (B,); student_proj: (B, D_t) enables AKD.
        """
        terms: dict[str, torch.Tensor] = {}
        for _ in range(self.steps):
            prompted = self.generator(x01)
            if self.statistics is not None:
                with self.statistics.collect() as layer_terms:
                    features = teacher(prompted.images)
            else:
                features = teacher(prompted.images)
            terms = prompt_losses(
                self.probe(features),
                targets,
                prompted.mask,
                self.log_prior,
                beta=self.beta,
                gamma=self.gamma,
                student_proj=student_proj,
                prompted_features=features if student_proj is not None else None,
                adversary_weight=self.adversary_weight,
            )
            if self.statistics is not None:
                terms["statistics"] = self.statistics_weight * torch.stack(layer_terms).mean()
            self.optimizer.zero_grad(set_to_none=True)
            torch.stack(list(terms.values())).sum().backward()
            self.optimizer.step()
        return {name: value.detach() for name, value in terms.items()}

    @torch.no_grad()
    def prompt(self, x01: torch.Tensor) -> torch.Tensor:
        """A freshly prompted copy of x01 (new noise), without gradients: the student's target."""
        return self.generator(x01).images

    def checkpoint_state(self) -> dict[str, Any]:
        """Generator, probe and optimiser state, for a training checkpoint."""
        return {"modules": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``checkpoint_state``."""
        self.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
