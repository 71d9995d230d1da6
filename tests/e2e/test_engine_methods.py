"""Every method learns a small long-tailed texture task on the CPU and beats chance.

Classes are sinusoid gratings that differ in spatial frequency (random orientation, phase and
tint, plus pixel noise), 32×32, trained on a 60/30/15/8 long tail and tested on a balanced,
held-out split. The teacher is a random-weight tiny network: this checks that every method's
pipeline trains a usable student end to end, not that distillation beats the baselines (that is
bench/fashion_lt.py's job).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch

from foprokd.data import LabelledImages
from foprokd.evaluation import predict
from foprokd.hyperparams import METHODS, TrainConfig
from foprokd.metrics import classification_report
from foprokd.runtime import seed_everything
from foprokd.student import Student
from foprokd.trainer import train
from foprokd.zoo import IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher, create_backbone

SIZE = 32
CYCLES_PER_IMAGE = (1.5, 3.0, 5.5, 9.0)
CLASSES = ["coarse", "medium", "fine", "finest"]
CHANCE = 1.0 / len(CLASSES)


def gratings(counts: Sequence[int], *, seed: int) -> LabelledImages:
    """uint8 (N, 3, 32, 32) gratings; class c has about CYCLES_PER_IMAGE[c] cycles per image."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)), indexing="ij")
    images, labels = [], []
    for label, count in enumerate(counts):
        for _ in range(count):
            theta, phase, jitter = torch.rand(3, generator=generator).tolist()
            cycles = CYCLES_PER_IMAGE[label] * (0.9 + 0.2 * jitter)
            direction = xx * math.cos(math.pi * theta) + yy * math.sin(math.pi * theta)
            wave = torch.sin(2 * math.pi * cycles / SIZE * direction + 2 * math.pi * phase)
            tint = 0.6 + 0.4 * torch.rand(3, 1, 1, generator=generator)
            noise = 0.08 * torch.randn(3, SIZE, SIZE, generator=generator)
            image = (0.5 + 0.35 * wave * tint + noise).clamp(0, 1)
            images.append((image * 255).round().to(torch.uint8))
            labels.append(label)
    return LabelledImages(torch.stack(images), torch.tensor(labels), list(CLASSES))


@pytest.fixture(autouse=True, scope="module")
def single_intra_op_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run far faster on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_method_beats_chance_on_a_long_tailed_texture_task(method: str, tmp_path: Path) -> None:
    train_set = gratings([60, 30, 15, 8], seed=0)
    val_set = gratings([10] * 4, seed=1)
    test_set = gratings([25] * 4, seed=2)

    seed_everything(0)
    teacher = FrozenTeacher(
        create_backbone("test_efficientnet", weights=None, allow_random=True),
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    student = Student(
        create_backbone("test_resnet", weights=None, allow_random=True),
        len(CLASSES),
        teacher.feature_dim,
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    config = TrainConfig(method=method, epochs=10, image_size=SIZE, device="cpu")
    result = train(config, train_set, val_set, student, teacher, run_dir=tmp_path)

    probs = predict(result.student, test_set, batch_size=64, device="cpu")
    report = classification_report(
        test_set.labels.numpy(), probs.argmax(axis=1), CLASSES, train_set.class_counts()
    )
    assert len(result.history) == 10
    assert (tmp_path / "checkpoint.pt").is_file()
    # 100 balanced test images: chance is 0.25 with a standard deviation of about 0.04.
    assert report["balanced_accuracy"] > CHANCE + 0.2, report
