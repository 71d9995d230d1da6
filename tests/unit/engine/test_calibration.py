"""ECE, NLL and temperature scaling against small cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from foprokd.calibration import (
    LOG_T_BOUNDS,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    softmax,
)


def test_ece_of_four_images_in_four_bins() -> None:
    # Confidences 0.9, 0.65, 0.7, 0.85 fall in four different 1/15-wide bins; the second is
    # wrong: ECE = (0.1 + 0.65 + 0.3 + 0.15) / 4.
    probabilities = [[0.9, 0.1], [0.65, 0.35], [0.3, 0.7], [0.85, 0.15]]
    labels = [0, 1, 1, 0]
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.3)


def test_ece_averages_within_a_bin() -> None:
    # 0.91 and 0.93 share the bin (13/15, 14/15]: accuracy 1/2, mean confidence 0.92.
    probabilities = [[0.91, 0.09], [0.93, 0.07]]
    assert expected_calibration_error(probabilities, [0, 1]) == pytest.approx(0.42)
    bins = reliability_bins(probabilities, [0, 1])
    assert len(bins) == 15
    filled = [b for b in bins if b["count"]]
    assert len(filled) == 1
    assert filled[0]["lower"] == pytest.approx(13 / 15)
    assert filled[0]["confidence"] == pytest.approx(0.92)
    assert filled[0]["accuracy"] == 0.5


def test_nll_by_hand() -> None:
    logits = [[2.0, 0.0], [0.0, 1.0]]
    # -log softmax for label 0: log(1 + e^(other - own)).
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    assert negative_log_likelihood(logits, [0, 0]) == pytest.approx(expected)
    at_two = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(0.5))) / 2
    assert negative_log_likelihood(logits, [0, 0], temperature=2.0) == pytest.approx(at_two)


def test_temperature_matches_the_closed_form() -> None:
    # Four images with logit gap 4, three right: the NLL is smallest where sigmoid(4 / T) = 3/4,
    # i.e. T = 4 / ln 3.
    logits = np.array([[4.0, 0.0]] * 4)
    labels = np.array([0, 0, 0, 1])
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(4 / math.log(3), rel=1e-3)
    assert softmax(logits, temperature)[0, 0] == pytest.approx(0.75, abs=1e-3)


def test_temperature_is_bounded_on_a_perfectly_separated_split() -> None:
    logits = np.array([[3.0, 0.0], [0.0, 3.0]])
    assert fit_temperature(logits, [0, 1]) == pytest.approx(math.exp(LOG_T_BOUNDS[0]), rel=1e-3)


def test_scaling_an_overconfident_model_lowers_ece_and_nll() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    # True class probability ~ softmax(clean), but the model reports 4x sharper logits.
    clean = rng.normal(0, 1, (2000, 4))
    clean[np.arange(2000), labels] += 1.5
    logits = 4.0 * clean
    report = calibration_report(logits[:1000], labels[:1000], logits[1000:], labels[1000:])
    assert report["temperature"] > 2.0
    assert report["calibrated"]["nll"] < report["uncalibrated"]["nll"]
    assert report["calibrated"]["ece"] < report["uncalibrated"]["ece"]
    # Dividing by T never changes the predicted class.
    t = report["temperature"]
    assert np.array_equal(softmax(logits, t).argmax(1), logits.argmax(1))
