"""The API's torch-free view of the engine stays equal to the engine itself."""

from __future__ import annotations

import dataclasses
from typing import get_args

from app.jobs.schemas import JobParams, Method
from app.jobs.service import TEACHERLESS_METHODS
from foprokd.trainer import METHODS, TEACHER_METHODS, TrainConfig


def test_methods_match_the_trainer() -> None:
    assert get_args(Method) == METHODS
    assert set(METHODS) - TEACHER_METHODS == TEACHERLESS_METHODS


def test_job_params_are_train_config_fields_with_the_same_paper_defaults() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    params = JobParams().train_config()
    assert set(params) <= set(defaults)
    assert params == {name: defaults[name] for name in params}


def test_job_params_build_a_train_config() -> None:
    params = JobParams(epochs=3, batch_size=8, image_size=32, allow_random_weights=True)
    config = TrainConfig.from_dict({**params.train_config(), "method": "ekd"})
    assert (config.epochs, config.batch_size, config.image_size, config.method) == (3, 8, 32, "ekd")
