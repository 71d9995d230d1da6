"""The domain-gap benchmark's acquisition shift is exactly undone by a mask the FPG can make."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.scanner_shift import ScannerShift, log_gain_agreement
from foprokd.fourier import FourierPromptGenerator, apply_spectral_mask, radial_frequency


def _generator_making(logits: torch.Tensor, shift: ScannerShift) -> FourierPromptGenerator:
    """An FPG whose head ignores its noise and always outputs ``logits``."""
    generator = FourierPromptGenerator(grid_size=shift.grid, alpha=shift.alpha, clamp=False)
    head = generator.net[-1]
    assert isinstance(head, nn.Linear)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(logits.flatten())
    return generator


@pytest.mark.parametrize("size", [32, 28, 64])
def test_the_fpg_can_undo_the_shift_exactly(size: int) -> None:
    shift = ScannerShift()
    x = torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(size))
    shifted = apply_spectral_mask(x, shift.gain(size, size), clamp=False)
    assert (shifted - x).abs().max() > 0.05  # the shift does change the images
    generator = _generator_making(shift.inverse_logits(), shift)
    undone = generator(shifted)
    # On the spectrum the product is 1; in pixels only the Hermitian projection of the
    # zero-frequency columns remains, below half a uint8 step: rounding to uint8 undoes it.
    assert torch.allclose(undone.mask * shift.gain(size, size), torch.ones(1), atol=1e-6)
    assert (undone.images - x).abs().max() < 0.5 / 255


def test_the_dc_term_is_a_per_channel_colour_gain() -> None:
    shift = ScannerShift()
    gain = shift.gain(32, 32)
    assert [round(float(gain[0, c, 0, 0]), 4) for c in range(3)] == list(shift.colour)
    flat = torch.full((1, 3, 32, 32), 0.5)
    shifted = apply_spectral_mask(flat, gain, clamp=False)
    assert torch.allclose(shifted.mean(dim=(2, 3)), 0.5 * torch.tensor([shift.colour]), atol=1e-5)


def test_bands_follow_the_design() -> None:
    # A design with all three bands (the default has no damped high band).
    shift = ScannerShift(
        colour=(1.15, 0.95, 0.78),
        mid_band=(0.25, 0.6),
        mid_gain=1.4,
        high_from=0.85,
        high_gain=0.88,
    )
    radius = radial_frequency(64, 64)
    gain = shift.gain(64, 64)[0, 1]  # green
    mid = (radius > 0.42) & (radius < 0.5)
    high = radius > 1.1
    assert gain[mid].mean() > shift.colour[1] * 1.25
    assert gain[high].mean() < shift.colour[1] * 0.95


def test_gains_the_fpg_cannot_reach_are_refused() -> None:
    with pytest.raises(ValueError, match="must lie in"):
        ScannerShift(colour=(2.5, 1.0, 1.0)).inverse_logits()


def test_uint8_application_reports_clipping() -> None:
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    shifted, clipped = ScannerShift().apply(images)
    assert shifted.dtype == torch.uint8
    assert shifted.shape == images.shape
    # Random pixels are far from natural images: the boosted band pushes many past 0 and 255.
    assert 0.0 < clipped < 0.5
    _, none_lost = ScannerShift().apply(torch.full((2, 3, 16, 16), 128, dtype=torch.uint8))
    assert none_lost == pytest.approx(0.0, abs=1e-6)


def test_agreement_of_log_gains() -> None:
    wanted = ScannerShift().inverse_mask(32, 32)
    assert log_gain_agreement(wanted, wanted) == pytest.approx(1.0)
    assert log_gain_agreement(1 / wanted, wanted) == pytest.approx(-1.0)
