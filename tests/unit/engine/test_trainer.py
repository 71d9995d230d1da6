"""foprokd.trainer: one loop for all methods, frozen teacher, exact resume, typed stops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from foprokd.checkpoint import best_student_state, load_checkpoint
from foprokd.data import LabelledImages
from foprokd.distillers import Distiller, EffectiveDistiller, build_distiller, train_step
from foprokd.errors import (
    CheckpointInvalid,
    NonFiniteLoss,
    TrainingCancelled,
    TrainingOutOfMemory,
    TrainingSuspended,
)
from foprokd.evaluation import predict
from foprokd.fourier import FourierPromptLearner
from foprokd.hyperparams import METHODS, TrainConfig
from foprokd.losses import log_class_prior
from foprokd.student import Student
from foprokd.trainer import EpochSummary, Progress, TrainCallbacks, TrainResult, train
from foprokd.zoo import FrozenTeacher

SplitFactory = Callable[..., LabelledImages]
StudentFactory = Callable[..., Student]
COUNTS = [12, 6, 3]  # 21 images, batch 8 -> 3 steps per epoch
STEPS = 3


class Recorder(TrainCallbacks):
    """Keeps everything the trainer reports; optionally cancels or acts after a given step."""

    def __init__(
        self,
        cancel_after: int | None = None,
        after_step: Callable[[Progress], None] | None = None,
        suspend_after: int | None = None,
    ) -> None:
        self.progress: list[Progress] = []
        self.summaries: list[EpochSummary] = []
        self.checkpoints: list[tuple[Path, int, int]] = []
        self.cancel_after = cancel_after
        self.suspend_after = suspend_after
        self.after_step = after_step

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)
        if self.after_step is not None:
            self.after_step(progress)

    def should_cancel(self) -> bool:
        return self.cancel_after is not None and len(self.progress) >= self.cancel_after

    def should_suspend(self) -> bool:
        return self.suspend_after is not None and len(self.progress) >= self.suspend_after

    def on_epoch_end(self, summary: EpochSummary) -> None:
        self.summaries.append(summary)

    def on_checkpoint(self, path: Path, epoch: int, step: int) -> None:
        assert path.is_file()
        self.checkpoints.append((path, epoch, step))


def _config(method: str = "fopro_akd", epochs: int = 2, **overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        "method": method,
        "epochs": epochs,
        "batch_size": 8,
        "image_size": 16,
        "fpg_hidden_dim": 32,
        "fpg_grid": (4, 3),
        "eval_batch_size": 16,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _prompt_learner(distiller: Distiller) -> FourierPromptLearner:
    assert isinstance(distiller, EffectiveDistiller)
    assert distiller.prompt is not None
    return distiller.prompt


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def splits(make_split: SplitFactory) -> tuple[LabelledImages, LabelledImages]:
    return make_split(COUNTS, seed=0), make_split([3, 3, 3], seed=1)


EXPECTED_TERMS = {
    "ce": {"ce", "loss"},
    "bsm": {"bsm", "loss"},
    "ekd": {"bsm", "bsm_proj", "distill", "loss"},
    "fopro": {"bsm", "bsm_proj", "distill", "loss", "fpg_probe", "fpg_mask", "fpg_loss"},
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_through_the_one_loop(
    method: str,
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    train_set, val_set = splits
    student = make_student(3, tiny_teacher.feature_dim)
    before = _state(student)
    recorder = Recorder()
    result = train(
        _config(method),
        train_set,
        val_set,
        student,
        tiny_teacher,
        run_dir=tmp_path,
        callbacks=recorder,
    )

    assert [p.global_step for p in recorder.progress] == list(range(1, 2 * STEPS + 1))
    assert [(p.epoch, p.step) for p in recorder.progress[:4]] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert all(p.steps_per_epoch == STEPS and p.total_steps == 2 * STEPS for p in recorder.progress)
    assert all(p.eta_s >= 0 and p.images_per_s > 0 for p in recorder.progress)
    first, last = recorder.progress[0].losses, recorder.progress[-1].losses
    if method == "fopro_akd":
        assert set(first) == EXPECTED_TERMS["fopro"]  # epoch 1 explores only
        assert set(last) == EXPECTED_TERMS["fopro"] | {"fpg_adversary"}
        assert last["fpg_adversary"] <= 0
    else:
        assert set(first) == set(last) == EXPECTED_TERMS[method]

    assert [s.epoch for s in recorder.summaries] == [1, 2]
    assert all(0.0 <= s.val_balanced_accuracy <= 1.0 for s in recorder.summaries)
    assert recorder.checkpoints == [
        (tmp_path / "checkpoint.pt", 1, 0),
        (tmp_path / "checkpoint.pt", 2, 0),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert not _same(before, _state(result.student))
    assert result.history == recorder.summaries


def test_teacher_weights_are_bit_identical_after_fopro_akd(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    teacher_before = _state(tiny_teacher)
    student = make_student(3, tiny_teacher.feature_dim)
    train(_config("fopro_akd", epochs=3), *splits, student, tiny_teacher, run_dir=tmp_path)
    assert _same(teacher_before, _state(tiny_teacher))
    assert all(not p.requires_grad and p.grad is None for p in tiny_teacher.parameters())
    assert not tiny_teacher.training


def test_student_step_changes_only_the_student(
    tiny_teacher: FrozenTeacher, make_student: StudentFactory
) -> None:
    torch.manual_seed(0)
    student = make_student(3, tiny_teacher.feature_dim)
    distiller = build_distiller(
        _config("fopro_akd"), student, tiny_teacher, log_class_prior(COUNTS)
    )
    prompt = _prompt_learner(distiller)
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-4)
    x, y = torch.rand(6, 3, 16, 16), torch.tensor([0, 0, 1, 1, 2, 2])

    out = student(x)
    distiller.prompt_step(x, y, out, epoch=1)  # the FPG step runs first, as in training
    frozen = {"teacher": _state(tiny_teacher), "prompt": _state(prompt)}
    student_before = _state(student)
    prompt.optimizer.zero_grad(set_to_none=True)

    losses = distiller.student_losses(x, y, out)
    optimizer.zero_grad()
    torch.stack(list(losses.values())).sum().backward()
    optimizer.step()

    assert _same(frozen["teacher"], _state(tiny_teacher))
    assert _same(frozen["prompt"], _state(prompt))
    assert all(p.grad is None for p in prompt.parameters())
    assert not _same(student_before, _state(student))


def _train_straight(
    splits: tuple[LabelledImages, LabelledImages],
    teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> Recorder:
    """Two epochs never stopped, in ``straight``: what a stopped and resumed run must equal."""
    straight = Recorder()
    train(
        _config(epochs=2),
        *splits,
        make_student(3, teacher.feature_dim),
        teacher,
        run_dir=tmp_path / "straight",
        callbacks=straight,
    )
    return straight


def _resume_split(
    splits: tuple[LabelledImages, LabelledImages],
    teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> tuple[Recorder, TrainResult]:
    """Finish the two epochs from ``split``'s checkpoint with a differently initialised
    student: everything must come from the checkpoint."""
    resumed = Recorder()
    result = train(
        _config(epochs=2),
        *splits,
        make_student(3, teacher.feature_dim, seed=99),
        teacher,
        run_dir=tmp_path / "split",
        callbacks=resumed,
        resume_from=tmp_path / "split" / "checkpoint.pt",
    )
    return resumed, result


def _assert_same_final_checkpoints(tmp_path: Path, result: TrainResult) -> dict[str, Any]:
    """The run in ``split`` (stopped, then resumed) ended where the one in ``straight`` did:
    student, distiller, epoch history (timing aside) and the returned best student."""
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert _same(a["student"], b["student"])
    assert _same(a["distiller"]["modules"], b["distiller"]["modules"])
    timing = {"seconds", "images_per_s", "epochs"}
    assert [{k: v for k, v in h.items() if k not in timing} for h in a["history"]] == [
        {k: v for k, v in h.items() if k not in timing} for h in b["history"]
    ]
    assert _same(best_student_state(a), _state(result.student))
    return b


def test_resume_continues_bit_for_bit(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    straight = _train_straight(splits, tiny_teacher, make_student, tmp_path)
    train(
        _config(epochs=1),
        *splits,
        make_student(3, tiny_teacher.feature_dim),
        tiny_teacher,
        run_dir=tmp_path / "split",
    )
    resumed, result = _resume_split(splits, tiny_teacher, make_student, tmp_path)

    assert [p.global_step for p in resumed.progress] == [4, 5, 6]
    assert [p.losses for p in resumed.progress] == [p.losses for p in straight.progress[STEPS:]]
    _assert_same_final_checkpoints(tmp_path, result)
    assert len(result.history) == 2


@pytest.mark.parametrize("suspend_after", [2, STEPS + 1])
def test_a_suspension_checkpoints_mid_epoch_and_resumes_bit_for_bit(
    suspend_after: int,
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    """SIGTERM's path: stop at a step boundary inside an epoch, save it, continue from it with
    the same shuffle order, RNG draws, optimiser state and loss sums as a run never stopped."""
    straight = _train_straight(splits, tiny_teacher, make_student, tmp_path)
    stopped = Recorder(suspend_after=suspend_after)
    with pytest.raises(TrainingSuspended) as caught:
        train(
            _config(epochs=2),
            *splits,
            make_student(3, tiny_teacher.feature_dim),
            tiny_teacher,
            run_dir=tmp_path / "split",
            callbacks=stopped,
        )
    epoch, step = divmod(suspend_after, STEPS)  # epochs done, steps done in the next one
    assert (caught.value.epoch, caught.value.step) == (epoch + 1, step)
    assert isinstance(caught.value, TrainingCancelled)  # callers that only know cancel still stop
    if step == 0:
        # Stopped at an epoch's first step: the epoch's own checkpoint is this boundary.
        assert stopped.checkpoints == [(tmp_path / "split" / "checkpoint.pt", epoch, 0)]
    else:
        assert stopped.checkpoints[-1] == (tmp_path / "split" / "checkpoint.pt", epoch, step)
        saved = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
        assert saved["in_epoch"]["step"] == step
        assert saved["global_step"] == suspend_after

    resumed, result = _resume_split(splits, tiny_teacher, make_student, tmp_path)
    assert [p.global_step for p in resumed.progress] == list(
        range(suspend_after + 1, 2 * STEPS + 1)
    )
    assert next((p.epoch, p.step) for p in resumed.progress) == (epoch + 1, step + 1)
    assert [p.losses for p in resumed.progress] == [
        p.losses for p in straight.progress[suspend_after:]
    ]
    # The epoch cut in two reports the same mean losses as the uninterrupted one.
    assert _assert_same_final_checkpoints(tmp_path, result)["in_epoch"] is None


def test_resume_refuses_a_checkpoint_of_another_configuration(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    train(_config("ekd", epochs=1), *splits, make_student(3, 256), tiny_teacher, run_dir=tmp_path)
    with pytest.raises(CheckpointInvalid, match="lr"):
        train(
            _config("ekd", epochs=2, lr=1e-2),
            *splits,
            make_student(3, 256),
            tiny_teacher,
            run_dir=tmp_path,
            resume_from=tmp_path / "checkpoint.pt",
        )


def test_a_checkpoint_stores_the_best_weights_once_when_its_epoch_set_them(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    """After a best epoch the checkpoint's student is the best (no second copy); after any
    other it keeps the best epoch's own weights, which a resume then returns."""
    seen: list[tuple[bool, dict[str, Any]]] = []

    class Keep(Recorder):
        def on_checkpoint(self, path: Path, epoch: int, step: int) -> None:
            super().on_checkpoint(path, epoch, step)
            seen.append((self.summaries[-1].is_best, load_checkpoint(path)))

    train(
        _config("bsm", epochs=4, lr=3e-2),
        *splits,
        make_student(3, 256),
        tiny_teacher,
        run_dir=tmp_path,
        callbacks=Keep(),
    )
    assert any(best for best, _ in seen)
    best_weights = None
    for is_best, payload in seen:
        assert payload["best"]["student_is_current"] is is_best
        assert (payload["best"]["student"] is None) is is_best
        if is_best:
            best_weights = payload["student"]
        if best_weights is None:  # no epoch has been best yet
            assert best_student_state(payload) is None
        else:
            assert _same(best_student_state(payload), best_weights)


def test_best_validation_epoch_is_the_returned_student(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    result = train(
        _config("bsm", epochs=4, lr=3e-3),
        *splits,
        make_student(3, 256),
        tiny_teacher,
        run_dir=tmp_path,
    )
    scores = [s.val_balanced_accuracy for s in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert result.best_balanced_accuracy == max(scores)
    checkpoint = load_checkpoint(result.checkpoint_path)
    assert checkpoint["best"]["epoch"] == result.best_epoch
    assert _same(best_student_state(checkpoint), _state(result.student))


def test_non_finite_loss_stops_training_naming_the_step(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    student = make_student(3, tiny_teacher.feature_dim)

    def poison(progress: Progress) -> None:
        if progress.global_step == 2:
            with torch.no_grad():
                student.fc.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLoss) as caught:
        train(
            _config("ekd"),
            *splits,
            student,
            tiny_teacher,
            run_dir=tmp_path,
            callbacks=Recorder(after_step=poison),
        )
    assert caught.value.step == 3
    assert "step 3" in str(caught.value)


def test_cancel_stops_before_the_next_step(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    recorder = Recorder(cancel_after=2)
    with pytest.raises(TrainingCancelled) as caught:
        train(
            _config(),
            *splits,
            make_student(3, 256),
            tiny_teacher,
            run_dir=tmp_path,
            callbacks=recorder,
        )
    assert (caught.value.epoch, caught.value.step) == (1, 2)
    assert len(recorder.progress) == 2
    assert not (tmp_path / "checkpoint.pt").exists()


def test_inputs_are_checked_before_training(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="image_size"):
        train(_config(image_size=32), *splits, make_student(3, 256), tiny_teacher, run_dir=tmp_path)
    with pytest.raises(ValueError, match="needs a teacher"):
        train(_config("ekd"), *splits, make_student(3, 256), None, run_dir=tmp_path)
    with pytest.raises(ValueError, match="projects to 64"):
        train(_config("ekd"), *splits, make_student(3, 64), tiny_teacher, run_dir=tmp_path)
    # ce and bsm need no teacher at all.
    train(_config("ce", epochs=1), *splits, make_student(3, 64), None, run_dir=tmp_path)


def test_config_round_trips_and_rejects_nonsense() -> None:
    config = _config(fpg_band=(0.1, 0.8))
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig().method == "fopro"
    assert (TrainConfig().lr, TrainConfig().batch_size, TrainConfig().distill_weight) == (
        3e-4,
        32,
        3.0,
    )
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="kd")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"lerning_rate": 1.0})


def test_predict_returns_probabilities_in_order(
    make_split: SplitFactory, make_student: StudentFactory
) -> None:
    images = make_split([4, 3], seed=3)
    student = make_student(2, 8)
    probs = predict(student, images, batch_size=3, device="cpu")
    assert probs.shape == (7, 2)
    assert probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    sixth = LabelledImages(images.images[5:6], images.labels[5:6], images.classes)
    single = predict(student.classifier(), sixth, batch_size=3, device="cpu")
    assert np.allclose(single[0], probs[5], atol=1e-6)


def test_bf16_autocast_step_keeps_the_fourier_path_in_float32(
    tiny_teacher: FrozenTeacher, make_student: StudentFactory
) -> None:
    # CUDA uses this path; CPU autocast exercises the same code without a GPU.
    torch.manual_seed(0)
    student = make_student(3, tiny_teacher.feature_dim)
    distiller = build_distiller(
        _config("fopro_akd"), student, tiny_teacher, log_class_prior(COUNTS)
    )
    prompt = _prompt_learner(distiller)
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-4)
    x = torch.rand(6, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    losses = train_step(
        distiller, optimizer, x, y, epoch=1, global_step=1, grad_clip_norm=5.0, autocast=True
    )
    assert set(losses) == EXPECTED_TERMS["fopro"] | {"fpg_adversary"}
    assert all(np.isfinite(v) for v in losses.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prompted = prompt.generator(x)
    assert prompted.images.dtype == prompted.mask.dtype == torch.float32


def _memory_limit(student: Student, max_batch: int) -> None:
    """Make the student's backbone behave like a device that holds at most ``max_batch`` images."""

    def check(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if inputs[0].shape[0] > max_batch:
            raise torch.OutOfMemoryError(f"batch {inputs[0].shape[0]} > {max_batch}")

    student.backbone.register_forward_pre_hook(check)


@pytest.mark.parametrize(
    ("max_batch", "suggested"),
    [(5, 4), (1, None)],
    ids=["probed-size", "nothing-fits"],
)
def test_out_of_memory_suggests_the_batch_size_a_probe_step_fits(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
    max_batch: int,
    suggested: int | None,
) -> None:
    student = make_student(3, tiny_teacher.feature_dim)
    _memory_limit(student, max_batch)
    with pytest.raises(TrainingOutOfMemory) as caught:
        train(_config("fopro_akd", batch_size=16), *splits, student, tiny_teacher, run_dir=tmp_path)
    error = caught.value
    assert (error.phase, error.batch_size, error.suggested_batch_size) == (
        "training",
        16,
        suggested,
    )
    expected = "batch size 4" if suggested else "Even batch size 2 does not fit"
    assert expected in str(error)


def test_out_of_memory_in_validation_names_the_eval_batch_size(
    splits: tuple[LabelledImages, LabelledImages],
    tiny_teacher: FrozenTeacher,
    make_student: StudentFactory,
    tmp_path: Path,
) -> None:
    student = make_student(3, tiny_teacher.feature_dim)
    _memory_limit(student, 8)  # training batches of 8 fit; validation batches of 32 do not
    with pytest.raises(TrainingOutOfMemory) as caught:
        train(
            _config("ekd", eval_batch_size=32),
            *splits,
            student,
            tiny_teacher,
            run_dir=tmp_path,
        )
    error = caught.value
    assert (error.phase, error.batch_size, error.suggested_batch_size) == ("validation", 32, 8)
    assert "eval batch size 8" in str(error)
