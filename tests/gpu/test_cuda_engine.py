"""The engine's CUDA paths: bf16 autocast + channels_last training of every method, a real CUDA
out-of-memory turned into ``TrainingOutOfMemory`` with a batch size that does fit, and
``torch.compile``.

Skipped where there is no GPU (CI has none). On a GPU host: ``pytest tests/gpu``; the file needs
only torch, timm and ``foprokd`` (``--noconftest`` runs it without the service's packages).
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from foprokd.data import LabelledImages
from foprokd.errors import TrainingOutOfMemory
from foprokd.hyperparams import METHODS, TrainConfig
from foprokd.student import Student
from foprokd.trainer import train
from foprokd.zoo import IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher, create_backbone

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CLASSES = 4


def images(counts: list[int], size: int, seed: int) -> LabelledImages:
    """uint8 images whose brightness and one colour channel encode the class, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    level = 40.0 + 170.0 * labels.float() / (len(counts) - 1)
    noise = torch.randn(len(labels), 3, size, size, generator=generator) * 30.0
    pixels = level.view(-1, 1, 1, 1) + noise
    pixels[:, labels.remainder(3)] += 20.0
    return LabelledImages(
        pixels.clamp(0, 255).round().to(torch.uint8), labels, [f"c{c}" for c in range(len(counts))]
    )


def teacher(name: str = "resnet18") -> FrozenTeacher:
    torch.manual_seed(1)
    backbone = create_backbone(name, weights=None, allow_random=True)
    with torch.no_grad():  # warm BatchNorm statistics so features are not trivial
        backbone(torch.rand(16, 3, 32, 32))
    return FrozenTeacher(backbone, IMAGENET_MEAN, IMAGENET_STD)


def student(teacher_dim: int, name: str = "resnet18") -> Student:
    torch.manual_seed(0)
    backbone = create_backbone(name, weights=None, allow_random=True)
    return Student(backbone, CLASSES, teacher_dim, IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_cuda_with_bf16_autocast_and_channels_last(
    method: str, tmp_path: Path
) -> None:
    frozen = teacher()
    before = {k: v.detach().clone() for k, v in frozen.state_dict().items()}
    model = student(frozen.feature_dim)
    config = TrainConfig(
        method=method,
        epochs=3,
        batch_size=32,
        image_size=32,
        device="cuda",
        amp=True,
        channels_last=True,
        eval_batch_size=64,
    )
    result = train(
        config,
        images([160, 80, 40, 20], 32, seed=0),
        images([20, 20, 20, 20], 32, seed=1),
        model,
        frozen,
        run_dir=tmp_path,
    )
    for summary in result.history:
        assert all(torch.isfinite(torch.tensor(v)) for v in summary.train_losses.values())
        assert summary.images_per_s > 0
    assert result.best_balanced_accuracy > 1 / CLASSES + 0.1, result.history
    after = frozen.state_dict()
    assert all(torch.equal(before[k], after[k].to(before[k].device)) for k in before)
    assert next(result.student.parameters()).device.type == "cuda"


def test_a_real_cuda_out_of_memory_suggests_a_batch_size_that_fits(tmp_path: Path) -> None:
    """Cap this process at 2 GiB of the card: 224 px batches of 512 cannot fit, the probe finds
    a halving that does, and training at that size then runs."""
    torch.cuda.empty_cache()
    _, total = torch.cuda.mem_get_info()
    torch.cuda.set_per_process_memory_fraction(2 * 1024**3 / total)
    try:
        frozen = teacher()
        train_set = images([150, 150, 150, 150], 224, seed=2)
        val_set = images([8, 8, 8, 8], 224, seed=3)
        config = TrainConfig(
            method="fopro_akd",
            epochs=1,
            batch_size=512,
            image_size=224,
            device="cuda",
            eval_batch_size=32,
        )
        with pytest.raises(TrainingOutOfMemory) as caught:
            train(config, train_set, val_set, student(frozen.feature_dim), frozen, run_dir=tmp_path)
        error = caught.value
        assert (error.phase, error.batch_size) == ("training", 512)
        suggested = error.suggested_batch_size
        assert suggested is not None, str(error)
        assert 16 <= suggested <= 256, str(error)
        assert f"batch size {suggested}" in str(error)

        # The failed run's frames (and their GPU tensors) live as long as its traceback.
        del caught, error
        gc.collect()
        torch.cuda.empty_cache()
        fitted = config.model_copy(update={"batch_size": suggested})
        result = train(
            fitted, train_set, val_set, student(frozen.feature_dim), frozen, run_dir=tmp_path / "b"
        )
        assert len(result.history) == 1
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_compiled_training_matches_the_eager_losses_closely(tmp_path: Path) -> None:
    frozen = teacher()
    config = TrainConfig(
        method="ekd", epochs=1, batch_size=32, image_size=32, device="cuda", amp=False
    )
    data = images([64, 32, 16, 16], 32, seed=4), images([8, 8, 8, 8], 32, seed=5)
    eager = train(config, *data, student(frozen.feature_dim), frozen, run_dir=tmp_path / "e")
    compiled = train(
        config.model_copy(update={"compile": True}),
        *data,
        student(frozen.feature_dim),
        frozen,
        run_dir=tmp_path / "c",
    )
    eager_loss = eager.history[0].train_losses["loss"]
    compiled_loss = compiled.history[0].train_losses["loss"]
    assert compiled_loss == pytest.approx(eager_loss, rel=0.05)
