"""bf16 autocast on the CPU: where it is used, and the gradient check that falls back to fp32
when a bf16 kernel gives gradients unlike fp32's (a oneDNN fault seen on this CPU for strided
convolutions on 1x1 feature maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from foprokd import runtime, trainer
from foprokd.data import LabelledImages
from foprokd.hyperparams import TrainConfig
from foprokd.runtime import precision_for
from foprokd.student import Student
from foprokd.trainer import TrainCallbacks, bf16_gradients_agree, train
from foprokd.zoo import FrozenTeacher
from tests.unit.engine.conftest import SplitFactory, StudentFactory

CPU = torch.device("cpu")


class _Bf16Fault(torch.autograd.Function):
    """Identity whose backward returns garbage when the incoming gradient is bf16, as the
    faulty kernel did."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.bf16 = x.dtype == torch.bfloat16
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, 1e30) if ctx.bf16 else grad


class _Faulty(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return _Bf16Fault.apply(out)


def _faulty(student: Student) -> Student:
    student.backbone.conv1 = _Faulty(student.backbone.conv1)
    return student


def test_precision_follows_the_settings_and_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda device: True)
    opted = TrainConfig()  # bf16 on a CPU with native bf16 kernels is the default
    assert precision_for(opted, CPU) == runtime.Precision(True, True)
    assert precision_for(TrainConfig(cpu_bf16=False), CPU) == runtime.Precision(False, False)
    assert precision_for(opted.model_copy(update={"channels_last": False}), CPU) == (
        runtime.Precision(True, False)
    )
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda device: False)
    assert precision_for(opted, CPU) == runtime.Precision(False, False)  # no fp32 NHWC on CPU


def test_gradient_check_passes_a_sound_model_and_catches_a_faulty_kernel(
    make_student: StudentFactory, make_split: SplitFactory
) -> None:
    # 32 px: at 16 px this CPU's oneDNN really does fault on the tiny student's last stage.
    images = make_split([6, 6], size=32)
    sound = make_student(2, 8)
    assert bf16_gradients_agree(sound, images, batch_size=8)
    before = {k: v.clone() for k, v in sound.state_dict().items()}
    bf16_gradients_agree(sound, images, batch_size=8)
    after = sound.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # a copy was probed
    assert all(p.grad is None for p in sound.parameters())
    assert not bf16_gradients_agree(_faulty(make_student(2, 8)), images, batch_size=8)


class _Warnings(TrainCallbacks):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_warning(self, message: str) -> None:
        self.messages.append(message)


def _record_autocast(monkeypatch: pytest.MonkeyPatch, *, run_in_fp32: bool) -> list[bool]:
    """Pretend this CPU has native bf16 kernels and record each train step's autocast flag;
    with ``run_in_fp32`` the steps themselves still compute in fp32."""
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda device: True)
    used: list[bool] = []
    real_step = trainer.train_step

    def spy(*args: Any, autocast: bool = False, **kwargs: Any) -> dict[str, float]:
        used.append(autocast)
        return real_step(*args, autocast=autocast and not run_in_fp32, **kwargs)

    monkeypatch.setattr(trainer, "train_step", spy)
    return used


@pytest.mark.parametrize("faulty", [False, True])
def test_training_falls_back_to_fp32_and_says_so(
    faulty: bool,
    make_student: StudentFactory,
    make_split: SplitFactory,
    tiny_teacher: FrozenTeacher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used = _record_autocast(monkeypatch, run_in_fp32=True)  # keep the test's numbers fp32
    student = make_student(2, tiny_teacher.feature_dim)
    if faulty:
        student = _faulty(student)
    train_set: LabelledImages = make_split([6, 6], size=32)
    warnings = _Warnings()
    config = TrainConfig(
        method="ekd", epochs=1, batch_size=4, image_size=32, device="cpu", cpu_bf16=True
    )
    train(
        config,
        train_set,
        make_split([2, 2], seed=1, size=32),
        student,
        tiny_teacher,
        run_dir=tmp_path,
        callbacks=warnings,
    )
    assert used
    assert all(autocast is not faulty for autocast in used)
    assert bool(warnings.messages) is faulty
    if faulty:
        assert "fp32" in warnings.messages[0]


def test_images_smaller_than_the_students_stride_train_in_fp32_without_a_warning(
    make_student: StudentFactory,
    make_split: SplitFactory,
    tiny_teacher: FrozenTeacher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At 16 px the tiny student's last strided convolution sees a 1x1 map, where oneDNN's bf16
    # kernel faulted on this CPU after passing the gradient check (NaN two steps later).
    used = _record_autocast(monkeypatch, run_in_fp32=False)
    warnings = _Warnings()
    config = TrainConfig(method="ekd", epochs=1, batch_size=4, image_size=16, device="cpu")
    assert config.cpu_bf16
    train(
        config,
        make_split([6, 6], size=16),
        make_split([2, 2], seed=1, size=16),
        make_student(2, tiny_teacher.feature_dim),
        tiny_teacher,
        run_dir=tmp_path,
        callbacks=warnings,
    )
    assert used
    assert not any(used)
    assert warnings.messages == []
