"""The released code's recipe, kept as the benchmarks' baseline, really trains the student."""

from __future__ import annotations

from pathlib import Path

import torch

from foprokd.manifest import scan_image_folder
from foprokd.reference import ReferenceRecipe, train_reference
from foprokd.synthetic import sample_dataset
from foprokd.zoo import FrozenTeacher
from tests.unit.engine.conftest import TINY_SIZE, StudentFactory


def test_reference_recipe_updates_the_student_and_never_the_teacher(
    tmp_path: Path, tiny_teacher: FrozenTeacher, make_student: StudentFactory
) -> None:
    sample = sample_dataset(classes=3, head=12, imbalance=3.0, size=TINY_SIZE, seed=4)
    for member in sample.members:
        (tmp_path / member.name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / member.name).write_bytes(member.data)
    rows = scan_image_folder(tmp_path, split_seed=0)
    classes = sorted({row.label for row in rows})
    student = make_student(len(classes), tiny_teacher.feature_dim)
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in tiny_teacher.state_dict().items()}
    losses: list[float] = []
    trained = train_reference(
        student,
        tiny_teacher,
        rows,
        root=tmp_path,
        classes=classes,
        image_size=TINY_SIZE,
        recipe=ReferenceRecipe(epochs=3, batch_size=8, num_workers=0),
        on_epoch=lambda epoch, loss: losses.append(loss),
    )
    assert trained is student
    assert len(losses) == 3
    assert all(loss > 0 for loss in losses)
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any(k.startswith("backbone") for k in changed)
    assert any(k.startswith("proj") for k in changed)  # the EKD head trains too
    assert all(torch.equal(v, teacher_before[k]) for k, v in tiny_teacher.state_dict().items())
