"""Progress a person sees in a terminal: the engine's runs as tqdm bars, one line per epoch."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from foprokd.pipeline import PipelineCallbacks
from foprokd.trainer import EpochSummary, Progress


class ProgressBar(PipelineCallbacks):
    """tqdm over the images decoded and all training steps, one printed line per epoch."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm[Any] | None = None

    def on_decode(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, unit="img", desc="decode", disable=not self.enabled)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def on_progress(self, progress: Progress) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=progress.total_steps,
                initial=progress.global_step - 1,
                unit="step",
                disable=not self.enabled,
                dynamic_ncols=True,
            )
        self.bar.update(1)
        self.bar.set_postfix(
            epoch=f"{progress.epoch}/{progress.epochs}",
            loss=f"{progress.losses['loss']:.3f}",
            img_s=f"{progress.images_per_s:.0f}",
            refresh=False,
        )

    def on_epoch_end(self, summary: EpochSummary) -> None:
        if self.enabled:
            tqdm.write(
                f"epoch {summary.epoch}/{summary.epochs}: val balanced accuracy "
                f"{summary.val_balanced_accuracy:.4f} (best {summary.best_balanced_accuracy:.4f} "
                f"at epoch {summary.best_epoch}), {summary.seconds:.1f} s"
            )

    def on_phase(self, phase: str) -> None:
        self.close()

    def on_warning(self, message: str) -> None:
        if self.enabled:
            tqdm.write(f"warning: {message}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
