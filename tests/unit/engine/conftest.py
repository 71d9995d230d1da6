"""Tiny random-weight models and data for the engine-core tests (CPU, seconds)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest
import torch

from foprokd.data import LabelledImages
from foprokd.student import Student
from foprokd.zoo import IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher, create_backbone

TINY_TEACHER = "test_efficientnet"  # ~0.1 M parameters, 256-d features
TINY_STUDENT = "test_resnet"  # ~0.4 M parameters, 96-d features
TINY_SIZE = 16

SplitFactory = Callable[..., LabelledImages]
StudentFactory = Callable[..., Student]


@pytest.fixture(autouse=True, scope="session")
def single_intra_op_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run ~10x faster on one thread than on two."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_teacher() -> FrozenTeacher:
    """A frozen random-weight teacher; BatchNorm stats warmed so features are not trivial."""
    torch.manual_seed(1234)
    backbone = create_backbone(TINY_TEACHER, weights=None, allow_random=True)
    with torch.no_grad():
        backbone(torch.rand(8, 3, TINY_SIZE, TINY_SIZE))
    return FrozenTeacher(backbone, IMAGENET_MEAN, IMAGENET_STD)


@pytest.fixture
def make_student() -> StudentFactory:
    """``make_student(num_classes, teacher_dim, seed=0)`` -> a random-weight tiny Student."""

    def build(num_classes: int, teacher_dim: int, seed: int = 0) -> Student:
        torch.manual_seed(seed)
        backbone = create_backbone(TINY_STUDENT, weights=None, allow_random=True)
        return Student(backbone, num_classes, teacher_dim, IMAGENET_MEAN, IMAGENET_STD)

    return build


@pytest.fixture
def make_split() -> SplitFactory:
    """``make_split(counts, seed=0, size=16)`` -> uint8 images whose brightness tracks the class."""

    def build(counts: Sequence[int], seed: int = 0, size: int = TINY_SIZE) -> LabelledImages:
        generator = torch.Generator().manual_seed(seed)
        labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
        level = 40.0 + 170.0 * labels.float() / max(len(counts) - 1, 1)
        noise = torch.randn(len(labels), 3, size, size, generator=generator) * 30.0
        images = (level.view(-1, 1, 1, 1) + noise).clamp(0, 255).round().to(torch.uint8)
        return LabelledImages(images, labels, [f"class{c}" for c in range(len(counts))])

    return build
