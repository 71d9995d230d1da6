"""The API's job parameters are the engine's own vocabulary (``foprokd.hyperparams``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.jobs.schemas import JobCreate, JobParams
from foprokd.distillers import DISTILLERS
from foprokd.hyperparams import DEFAULT_METHOD, METHODS, HyperParams, TrainConfig


def test_every_method_has_a_distiller_and_an_api_name() -> None:
    assert set(DISTILLERS) == set(METHODS)
    schema = JobCreate.model_json_schema()
    assert tuple(schema["properties"]["method"]["enum"]) == METHODS


def test_job_params_are_the_engine_hyper_parameters_plus_service_switches() -> None:
    assert set(JobParams.model_fields) == {*HyperParams.model_fields, "allow_random_weights"}
    config = JobParams().train_config(DEFAULT_METHOD)
    assert config == TrainConfig()  # the paper's defaults, from one definition


def test_job_params_build_a_train_config() -> None:
    params = JobParams(epochs=3, batch_size=8, image_size=32, allow_random_weights=True)
    config = params.train_config("ekd")
    assert (config.epochs, config.batch_size, config.image_size, config.method) == (3, 8, 32, "ekd")
    with pytest.raises(ValidationError):
        params.train_config("kd")


def test_the_service_is_stricter_than_the_engine_on_image_size() -> None:
    assert TrainConfig(image_size=16).image_size == 16  # the engine's tests train at 16 px
    with pytest.raises(ValidationError, match="multiple of 8 and at least 32"):
        JobParams(image_size=16)
    with pytest.raises(ValidationError, match="multiple of 8"):
        JobParams(image_size=36)
